# The commands CI runs are the commands a person runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo lab test test-without-optional-libs lint typecheck unit clean

install: $(STAMP)

$(STAMP): pyproject.toml runner/kernel.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -m loadproof.kernel install >/dev/null
	touch $(STAMP)

demo: install
	$(BIN)/loadproof pipeline

# Interactive exploration: JupyterLab on notebooks/, bound to 127.0.0.1 only, no browser (it
# prints the URL with its token; open that). Kernels get CurveZMQ transport encryption from
# the kernel manager (the kernelspec declares support), so they start without ipykernel's
# "running over TCP without encryption" notice. LAB_PORT=8890 picks another port. As root
# (a container) Jupyter refuses to start unless told; it still serves loopback only.
LAB_PORT ?= 8888
lab: install
	$(BIN)/jupyter lab --no-browser --ip 127.0.0.1 --port $(LAB_PORT) \
		--ServerApp.root_dir=notebooks --KernelManager.transport_encryption=auto \
		$(if $(filter 0,$(shell id -u)),--allow-root)

lint: install
	$(BIN)/ruff check runner services tests bench
	$(BIN)/mypy

# The fast tests (no k6, no database; mostly notebook kernels and report exports) run on
# TEST_WORKERS processes (pytest-xdist; whole modules per worker, so a module's fixtures are
# made once); the slow ones one at a time after them, as they put load on the machine and
# check that nothing else disturbed it. Both halves always run; the target fails if either did.
TEST_WORKERS ?= 2
test: install lint
	status=0; \
	$(BIN)/pytest -m "not slow" -n $(TEST_WORKERS) --dist loadscope || status=$$?; \
	$(BIN)/pytest -m slow --durations=15 || status=$$?; \
	exit $$status

# What a fresh machine sees: the system libraries WeasyPrint can do without are made
# unloadable (tests/hide_libs/sitecustomize.py; no root, nothing uninstalled), and the tests
# that write PDFs run again: the PDF export in-process with warnings as errors, and whole
# reports through the CLI.
OPTIONAL_LIBS := harfbuzz-subset,harfbuzz-vector
test-without-optional-libs: install
	PYTHONPATH="$(CURDIR)/tests/hide_libs" LOADPROOF_HIDE_LIBS=$(OPTIONAL_LIBS) \
		$(BIN)/pytest -p no:cacheprovider tests/test_fresh_machine.py tests/test_report.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
