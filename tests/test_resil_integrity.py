"""The server-side cross-check and the resource sampling for the runs the first integrity
checks left out: a stage split over several k6 generators (--generators) and a run driven by
a user's own k6 script (--plan script). Real k6 against a small service of someone else's
(tests/metrics_server.py) on loopback."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from loadproof.execute import run_stages
from loadproof.plan import make_plan
from loadproof.progress import Progress
from loadproof.store import load_run

from .test_integrity_server import _service

QUIET = Progress(quiet=True)
METRICS = {"prometheus_requests": "app_http_requests",
           "prometheus_latency": "app_latency_seconds"}


@pytest.mark.slow
def test_a_stage_over_two_generators_is_cross_checked_and_sampled(tmp_path: Path) -> None:
    # a warm-up before the measured window: both generators' warm-ups must have stopped
    # before the first scrape, and neither's measured scenario may start before it
    with _service(delay_s=0.005) as (url, pid):
        run = run_stages(make_plan("6", stage_duration="3s", warmup="1s"), label="split",
                         target=url, script="quick", out_dir=tmp_path, progress=QUIET,
                         generators=2,
                         server={"prometheus": url + "/metrics", "target_pid": pid, **METRICS})
    (record,) = load_run(run.path).stages
    assert record["status"] == "complete" and record["generators"] == 2
    server = record["server"]
    assert "error" not in server, server
    # the split stage waits twice the single stage's gap between warm-up and window
    assert record["window_gap_s"] == 2.0
    edges = server["edges"]
    assert edges["warmup_done_before_first_scrape"] is True, edges
    assert edges["main_started_after_first_scrape"] is True, edges
    assert edges["main_done_before_last_scrape"] is True, edges
    # with clean edges nothing is in flight at them: the server counted what k6 stored
    client = record["requests"]
    assert client > 0 and server["client_requests"] == client
    in_flight = (server.get("in_flight_at_start") or 0) + (server.get("in_flight_at_end") or 0)
    assert abs(server["requests_total"] - client) <= in_flight, server
    assert server["requests"] == {"200": client}
    # the merged requests have both generators; the shards' raw CSVs are dropped afterwards
    requests = pl.read_parquet(run.path / record["requests_file"])
    assert sorted(requests["shard"].unique().to_list()) == [0, 1]
    assert not list((run.path / "stages" / record["dir"]).glob("shards/*/raw.csv"))
    # resources: k6 (every generator, loadproof's children) and the target by its pid
    resources = pl.read_parquet(run.path / record["resources_file"])
    assert set(resources["process"].cast(pl.String)) == {"machine", "k6", "target"}
    k6 = resources.filter(pl.col("process") == "k6")
    assert k6.height >= 3 and k6["cpu_percent"].max() > 0
    assert record["conditions"]["k6_cpu_cores"] > 0
    # the guard judged the split stage (its verdict depends on what else the machine runs)
    assert record["generator"]["k6_cpu_cores"] == record["conditions"]["k6_cpu_cores"]


SCRIPT_JS = """
import http from 'k6/http';
import { sleep } from 'k6';

export const options = {
  scenarios: {
    browse: { executor: 'constant-vus', vus: 2, duration: '2s', exec: 'browse' },
    buy: { executor: 'constant-arrival-rate', rate: 10, timeUnit: '1s', duration: '2s',
           preAllocatedVUs: 4, startTime: '1s', exec: 'buy' },
  },
};

export function setup() { http.get(__ENV.LP_TARGET + '/setup'); }
export function browse() { http.get(__ENV.LP_TARGET + '/browse'); sleep(0.1); }
export function buy() { http.get(__ENV.LP_TARGET + '/buy'); }
"""


@pytest.mark.slow
def test_a_script_driven_run_is_cross_checked_and_sampled(tmp_path: Path) -> None:
    script = tmp_path / "shop.js"
    script.write_text(SCRIPT_JS)
    with _service() as (url, pid):
        run = run_stages(make_plan("10"), label="shop", target=url, script=str(script),
                         out_dir=tmp_path / "runs", progress=QUIET, stages_given=False,
                         server={"prometheus": url + "/metrics", "target_pid": pid, **METRICS})
    stored = load_run(run.path)
    assert stored.manifest["load_mode"] == "script"
    browse, buy = stored.stages
    assert {browse["status"], buy["status"]} == {"complete"}
    # one window for the whole k6 test, the same in both stage records
    server = browse["server"]
    assert "error" not in server, server
    assert server == buy["server"] and server["scope"] == "test"
    assert server["edges"]["clean"] is True, server
    # everything k6 sent (setup's request too) is what the server counted
    stored_requests = browse["requests"] + buy["requests"]
    assert server["client_requests_stored"] == stored_requests > 0
    assert server["client_requests"] == stored_requests + 1
    assert server["requests_total"] == server["client_requests"], server
    assert server["p50_ms"] is not None and server["client_p95_ms"] > 0
    assert (stored.path / server["timeline_file"]).is_file()
    # one resource timeline for the k6 process, each stage summarised over its own window
    assert browse["resources_file"] == buy["resources_file"]
    resources = pl.read_parquet(stored.path / browse["resources_file"])
    assert set(resources["process"].cast(pl.String)) == {"machine", "k6", "target"}
    for record in (browse, buy):
        assert record["resources"]["k6"]["samples"] >= 1, record["resources"]
        # the guard judged each stage on k6's CPU in that stage's own window, not the test's
        assert record["generator"]["k6_cpu_cores"] == pytest.approx(
            record["resources"]["k6"]["cpu_percent_mean"] / 100, abs=0.001)
    assert browse["conditions"]["k6_cpu_cores"] > 0


def test_a_whole_test_window_is_named_in_the_report_columns() -> None:
    from loadproof.integrity import server_columns

    record = {"requests": 40, "server": {"scope": "test", "requests_total": 41,
                                         "client_requests": 41, "client_p95_ms": 3.0,
                                         "p95_ms": 2.5, "edges": {"clean": True}}}
    columns = server_columns(record)
    assert columns["requests client / server"] == "41 / 41 (whole k6 test)"
    del record["server"]["scope"]
    assert server_columns(record)["requests client / server"] == "41 / 41"


@pytest.mark.slow
def test_the_reference_service_counts_what_two_generators_stored(tmp_path: Path) -> None:
    # the reference service's own /metrics, scraped around a stage split over 2 generators
    run = run_stages(make_plan("100", model="rate", stage_duration="3s", warmup="1s"),
                     label="cross2", profile="optimized", script="submit", out_dir=tmp_path,
                     progress=QUIET, generators=2)
    (record,) = load_run(run.path).stages
    server = record["server"]
    assert "error" not in server, server
    client = record["requests"]
    assert client >= 0.5 * 100 * 3
    assert server["edges"]["clean"] is True, server
    assert abs(server["requests_total"] - client) <= 0.01 * client, server
    assert record["resources"]["target"]["samples"] >= 2
