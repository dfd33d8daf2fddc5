"""Fault stages split over several k6 generators (--generators): the fault's window is the
stage's, not each shard's (its start and stop run once), and the resilience figures come from
the union of every shard's requests."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from loadproof.execute import run_stages
from loadproof.faults import parse_fault
from loadproof.plan import make_plan
from loadproof.resilience import run_figures
from loadproof.store import load_run

from .test_faults import COMES_BACK_AFTER_S, QUIET, RECOVERY_S, SLO, _get, fault_server


@pytest.mark.slow
def test_command_fault_over_two_generators_measures_the_known_recovery(runs_dir: Path) -> None:
    count_start = "echo start >> \"$LP_RUN_DIR/fault-starts.txt\"; "
    count_stop = "echo stop >> \"$LP_RUN_DIR/fault-stops.txt\"; "
    fault = parse_fault({"name": "cut", "stage": 1, "at": "2s", "duration": "2s",
                         "start": count_start + _get("/control/down"),
                         "stop": count_stop + _get("/control/up")})
    with fault_server(COMES_BACK_AFTER_S) as (url, _):
        run = run_stages(make_plan("4", model="vus", stage_duration="12s"), label="split",
                         target=url, script="quick", out_dir=runs_dir, progress=QUIET,
                         fault_specs=[fault], generators=2)
    run = load_run(run.path)
    assert run.status == "complete", run.manifest["status_reason"]
    (record,) = run.stages
    assert record["generators"] == 2 and len(record["shards"]) == 2
    # one fault for the stage: its start and its stop ran once, not once per generator
    assert (run.path / "fault-starts.txt").read_text().splitlines() == ["start"]
    assert (run.path / "fault-stops.txt").read_text().splitlines() == ["stop"]
    assert record["fault"]["injected"], record["fault"]
    # the figures come from every generator's requests: both shards saw the fault
    requests = pl.read_parquet(run.path / record["requests_file"])
    assert sorted(requests["shard"].unique().to_list()) == [0, 1]
    assert requests.height == record["requests"]
    (figures,) = run_figures(run, **SLO)
    # never sooner than the server's known recovery; at most one 1-second bin later, since two
    # k6 processes on a busy 2-core machine can push the first recovered second over the SLO
    # (the one-generator test in test_faults.py checks the exact figure)
    assert figures.recovered and figures.recovery_s is not None, figures
    assert RECOVERY_S <= figures.recovery_s <= RECOVERY_S + 1.0, figures
    # the window opens when the start command starts: the only successes in it are requests
    # answered before the command reached the server (a shell and a Python start, slow on a
    # busy machine) or in flight as it flipped; the rest of the window fails
    in_window = requests.filter(
        (pl.col("timestamp") >= pl.lit(figures.fault_started_at).str.to_datetime(time_zone="UTC"))
        & (pl.col("timestamp") < pl.lit(figures.fault_stopped_at).str.to_datetime(time_zone="UTC")))
    assert in_window.height > 20
    assert figures.success_during_fault is not None and figures.success_during_fault <= 0.10, \
        figures
    assert figures.time_to_first_error_s is not None and figures.time_to_first_error_s < 1.0
    assert 1.9 <= figures.fault_s <= 4.0  # the 2 s fault plus its stop command
    assert figures.failed_outside_fault <= 2
    # each generator's requests failed during the window: the fault hit the whole stage
    start = pl.lit(figures.fault_started_at).str.to_datetime(time_zone="UTC")
    stop = pl.lit(figures.fault_stopped_at).str.to_datetime(time_zone="UTC")
    inside = requests.filter((pl.col("timestamp") >= start) & (pl.col("timestamp") < stop))
    by_shard = inside.group_by("shard").agg(pl.len().alias("n"),
                                            (pl.col("status") == 503).sum().alias("failed"))
    assert by_shard.height == 2 and (by_shard["failed"] > 0).all(), by_shard


@pytest.mark.slow
def test_db_outage_over_two_generators(runs_dir: Path) -> None:
    fault = parse_fault({"stage": 1, "at": "1s", "duration": "1s", "action": "db-outage"})
    run = run_stages(make_plan("4", stage_duration="9s"), label="pg2", profile="optimized",
                     script="journey", out_dir=runs_dir, progress=QUIET, fault_specs=[fault],
                     generators=2)
    run = load_run(run.path)
    assert run.status == "complete", run.manifest["status_reason"]
    assert "service_exits" not in run.manifest
    (record,) = run.stages
    outage = record["fault"]
    assert outage["injected"] and record["generators"] == 2
    assert "server stopped" in (run.path / outage["start"]["output_file"]).read_text()
    (figures,) = run_figures(run, **SLO)
    assert figures.failed_during_fault > 0, figures
    assert figures.recovered, figures
    # the journey's write check is summed over both generators' summaries
    assert figures.acknowledged_writes_lost == 0, figures
