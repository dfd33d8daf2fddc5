"""``loadproof report``'s comparison, made in a process of its own.

Comparing reads every request of both runs; polars' allocator keeps the pages it freed for a
while, so the report's process would hold them through everything that follows (the endpoint
rows, the chart inputs, the notebook's kernel beside it). Made here, in a child that writes
the Comparison's figures as JSON (what ``comparison.json`` holds) and exits, every page goes
back at once, and the report's own process keeps polars' faster default. The parent reads the
figures back through ``handoff.comparison_from_dict``, as the notebook does.

    python -m loadproof.compare_child OUT.json BASELINE_DIR CANDIDATE_DIR P95_MS SUCCESS MIN
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import errors
from .compare import Comparison, Slo
from .store import Run

# the child's own allocator setting, whatever its parent's: its memory all goes back at its
# exit anyway, and freed pages returned at once keep its peak low while it compares
_CHILD_ALLOCATOR = "dirty_decay_ms:0,muzzy_decay_ms:0"


class ComparisonProcess:
    """compare_runs(baseline, candidate, slo=slo), being made by a child process from the
    moment this is created, while the caller does other work; ``result`` waits for it and
    raises its errors here as the same kind of loadproof error (same message, same exit
    code); ``stop`` ends it if it still runs (the caller's ``finally``)."""

    def __init__(self, baseline: Run, candidate: Run, slo: Slo) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="loadproof-compare-")
        self._out = Path(self._folder.name) / "comparison.json"
        env = {**os.environ, "_RJEM_MALLOC_CONF": _CHILD_ALLOCATOR}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "loadproof.compare_child", str(self._out),
             str(baseline.path), str(candidate.path), repr(slo.p95_ms), repr(slo.success),
             str(slo.min_successes)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def result(self) -> Comparison:
        from .handoff import comparison_from_dict

        _, stderr = self._proc.communicate()
        data = _read(self._out)
        if self._proc.returncode != 0 or data is None:
            raise _error_from(data, self._proc.returncode, stderr)
        return comparison_from_dict(data)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()
        self._folder.cleanup()


def compare_in_child(baseline: Run, candidate: Run, slo: Slo) -> Comparison:
    """compare_runs(baseline, candidate, slo=slo), made by a child process."""
    child = ComparisonProcess(baseline, candidate, slo)
    try:
        return child.result()
    finally:
        child.stop()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _error_from(data: dict[str, Any] | None, returncode: int | None,
                stderr: str | None) -> errors.LoadproofError:
    if data is not None and "error" in data:
        error = errors.LoadproofError(str(data["message"]), path=data.get("path"))
        error.exit_code = int(data.get("exit_code") or errors.LoadproofError.exit_code)
        return error
    tail = (stderr or "").strip().splitlines()[-20:]
    return errors.ComparisonError(f"the comparison's process failed (exit {returncode}): "
                                  + "\n".join(tail))


def main(argv: list[str]) -> int:
    from .compare import compare_runs
    from .store import load_run

    out, base, cand, p95, success, least = argv
    try:
        comparison = compare_runs(load_run(Path(base)), load_run(Path(cand)),
                                  slo=Slo(float(p95), float(success), int(least)))
        data: dict[str, Any] = comparison.to_dict()
    except errors.LoadproofError as exc:
        data = {"error": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code,
                "path": str(exc.path) if getattr(exc, "path", None) else None}
    Path(out).write_text(json.dumps(data, default=_json_default), encoding="utf-8")
    return 0 if "error" not in data else 1


def _json_default(obj: Any) -> Any:
    return list(obj) if isinstance(obj, tuple) else str(obj)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
