"""Wording of stages that have nothing to show: a stage with no requests is said to have none."""

from __future__ import annotations

from pathlib import Path

from loadproof.compare import compare_runs
from loadproof.summary import caveats

from .helpers import make_run


def test_a_stage_without_requests_is_not_said_to_have_only_failures(runs_dir: Path) -> None:
    base = make_run(runs_dir, "base", {"s1-10vus": (10, [5.0] * 40, [200] * 40)})
    cand = make_run(runs_dir, "cand", {"s1-10vus": (10, [], [])})
    notes = caveats(compare_runs(base, cand))
    assert any("candidate has no requests at s1-10vus" in n for n in notes)
    assert not any("failures requests" in n or "only failures" in n for n in notes)
