"""The CLI starts without loading what a verb does not use (`python -X importtime` shows the
cost); bench/cli_startup.py times it."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pandas", "polars", "numpy", "pyarrow", "matplotlib", "papermill", "nbformat",
         "jsonschema", "weasyprint", "scipy", "fastapi", "sqlalchemy", "httpx", "pydantic",
         "loadproof.orchestrator.server")


def _loaded_after(code: str) -> list[str]:
    probe = (code + "\nimport sys\nprint(' '.join(m for m in sys.argv[1:] if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe, *HEAVY], capture_output=True, text=True,
                          check=True)
    return proc.stdout.split()


def test_help_loads_no_heavy_module() -> None:
    code = "from loadproof.cli import build_parser\nbuild_parser().format_help()"
    assert _loaded_after(code) == []


def test_import_verb_loads_polars_only() -> None:
    code = "from loadproof.cli import build_parser\nbuild_parser()\nimport loadproof.importer"
    assert _loaded_after(code) == ["polars"]
