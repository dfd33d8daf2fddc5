# The commands CI runs are the commands a person runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-without-optional-libs lint typecheck unit clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: install
	$(BIN)/loadproof pipeline

lint: install
	$(BIN)/ruff check runner services tests bench
	$(BIN)/mypy

test: install lint
	$(BIN)/pytest

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
