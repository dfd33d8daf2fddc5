"""The divisor of every rate: a stage is divided by its measured load window when that is
shorter than the plan (interrupted or aborted), by the plan when the window agrees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from loadproof.metrics import stage_duration, stage_metrics
from loadproof.store import load_run

from .helpers import make_run


def _stage(runs_dir: Path, **record: Any) -> Any:
    """A one-stage run of 40 requests over a planned 10 s, its stage record amended."""
    run = make_run(runs_dir, "arm", {"s1-10vus": (10, [5.0] * 40, [200] * 40)}, duration_s=10.0)
    run.manifest["stages"][0].update(record)
    run.save()
    (stage,) = stage_metrics(load_run(run.path))
    return stage


def test_an_interrupted_stage_is_divided_by_its_measured_window(runs_dir: Path) -> None:
    # Ctrl-C 4 s into a 10 s stage after a 1 s warm-up: 40 requests in 4 s, not in 10 s
    stage = _stage(runs_dir, status="incomplete", warmup_s=1.0,
                   started_at="2026-01-01T00:00:00.000Z", ended_at="2026-01-01T00:00:05.000Z")
    assert stage.duration_s == pytest.approx(4.0)
    assert stage.duration_source == "measured (stage start to end)"
    assert stage.throughput_rps == pytest.approx(10.0)
    assert stage.goodput_rps == pytest.approx(10.0)


def test_a_complete_stage_whose_window_agrees_keeps_the_plan(runs_dir: Path) -> None:
    # k6 takes a moment to start and stop: the wall window is longer than the plan
    stage = _stage(runs_dir, started_at="2026-01-01T00:00:00.000Z",
                   ended_at="2026-01-01T00:00:10.600Z")
    assert stage.duration_s == 10.0 and stage.duration_source == "planned"
    assert stage.throughput_rps == pytest.approx(4.0)


def test_a_recorded_measured_window_wins_and_is_clipped_to_the_plan(runs_dir: Path) -> None:
    stage = _stage(runs_dir, measured_s=2.5, started_at="2026-01-01T00:00:00.000Z",
                   ended_at="2026-01-01T00:00:10.600Z")
    assert stage.duration_s == 2.5 and stage.duration_source == "measured (stage record)"
    assert stage_duration({"duration_s": 10.0, "measured_s": 12.0}, None) == (10.0, "planned")
    assert stage_duration({"duration_s": 10.0}, None) == (10.0, "planned")


def test_repeats_add_their_own_windows(runs_dir: Path) -> None:
    run = make_run(runs_dir, "two", {"s1-10vus": (10, [5.0] * 40, [200] * 40)},
                   duration_s=10.0, repeats=2)
    run.manifest["stages"][1]["measured_s"] = 5.0  # the second repeat was cut short
    run.save()
    (stage,) = stage_metrics(load_run(run.path))
    assert stage.duration_s == pytest.approx(15.0)
    assert stage.duration_source == "planned + measured (stage record)"
    assert [p.duration_s for p in stage.per_repeat] == [10.0, 5.0]


def test_a_stage_of_no_set_length_is_divided_by_its_recorded_window() -> None:
    # a script's iterations-shaped scenario: no planned duration, the window the run measured
    record = {"duration_s": 0.0, "measured_s": 3.25,
              "measured_from": "from the first to the last request"}
    assert stage_duration(record, None) == (3.25,
                                            "measured (from the first to the last request)")
    cut = {"duration_s": 10.0, "measured_s": 4.0,
           "measured_from": "from the stage's start to its last request"}
    assert stage_duration(cut, None) == (4.0,
                                         "measured (from the stage's start to its last request)")
