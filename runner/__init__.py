"""loadproof: measured, traceable before/after evidence from real k6 load tests.

The Python API the notebooks and the CLI share::

    from loadproof import make_plan, run_stages, load_run, compare_runs
    run = run_stages(make_plan("10,50,100"), label="baseline", profile="baseline")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "make_plan": "loadproof.plan",
    "StagePlan": "loadproof.plan",
    "run_stages": "loadproof.execute",
    "RunSession": "loadproof.execute",
    "load_run": "loadproof.store",
    "Run": "loadproof.store",
    "import_files": "loadproof.importer",
    "stage_metrics": "loadproof.metrics",
    "compare_runs": "loadproof.compare",
    "Slo": "loadproof.compare",
    "build_achievement": "loadproof.achievements",
    "make_report": "loadproof.report",
    "run_pipeline": "loadproof.pipeline",
}

if TYPE_CHECKING:
    from .achievements import build_achievement
    from .compare import Slo, compare_runs
    from .execute import RunSession, run_stages
    from .importer import import_files
    from .metrics import stage_metrics
    from .pipeline import run_pipeline
    from .plan import StagePlan, make_plan
    from .report import make_report
    from .store import Run, load_run

__all__ = [
    "Run", "RunSession", "Slo", "StagePlan", "build_achievement", "compare_runs",
    "import_files", "load_run", "make_plan", "make_report", "run_pipeline", "run_stages",
    "stage_metrics",
]


def __getattr__(name: str) -> Any:
    # lazy, so `import loadproof` stays cheap for the CLI and the notebooks' first cell
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'loadproof' has no attribute {name!r}")
