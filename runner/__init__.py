"""loadproof: measured, traceable before/after evidence from real k6 load tests.

The Python API the notebooks and the CLI share::

    from runner import make_plan, run_stages, load_run, compare_runs
    run = run_stages(make_plan("10,50,100"), label="baseline", profile="baseline")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "make_plan": "runner.plan",
    "StagePlan": "runner.plan",
    "run_stages": "runner.execute",
    "RunSession": "runner.execute",
    "load_run": "runner.store",
    "Run": "runner.store",
    "import_files": "runner.importer",
    "stage_metrics": "runner.metrics",
    "compare_runs": "runner.compare",
    "Slo": "runner.compare",
    "build_achievement": "runner.achievements",
    "make_report": "runner.report",
    "run_pipeline": "runner.pipeline",
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
    # lazy, so `import runner` stays cheap for the CLI and the notebooks' first cell
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'runner' has no attribute {name!r}")
