"""The server-side cross-check's arithmetic on real Prometheus expositions (written by
prometheus_client, read by its parser): request counts by status and histogram_quantile on
the deltas between two scrapes, and the command line's checks of the integrity flags."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from loadproof import cli
from loadproof.promscrape import (
    DEFAULT_LATENCY_METRIC,
    DEFAULT_REQUESTS_METRIC,
    Scraper,
    ServerMetrics,
    buckets,
    histogram_quantile,
    parse,
    requests_by_status,
    server_record,
)
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from .helpers import tiny_server

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


def _registry() -> tuple[CollectorRegistry, Histogram, Counter]:
    registry = CollectorRegistry()
    latency = Histogram(DEFAULT_LATENCY_METRIC, "latency", ["route", "method", "status"],
                        buckets=BUCKETS, registry=registry)
    counter = Counter("app_requests", "requests", ["code"], registry=registry)
    return registry, latency, counter


def _exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_quantiles_follow_prometheus_interpolation() -> None:
    # 50 observations in (0.1, 0.25], 50 in (0.25, 0.5]: histogram_quantile(0.5) is the top
    # of the first of these buckets, 0.95 lies 90% into the second
    cumulative = [(0.1, 0.0), (0.25, 50.0), (0.5, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, cumulative) == pytest.approx(0.25)
    assert histogram_quantile(0.95, cumulative) == pytest.approx(0.25 + 0.25 * 45 / 50)
    # the first bucket interpolates from 0; a rank in +Inf gives the highest finite bound
    assert histogram_quantile(0.5, [(0.1, 10.0), (math.inf, 10.0)]) == pytest.approx(0.05)
    assert histogram_quantile(0.99, [(0.1, 10.0), (math.inf, 20.0)]) == pytest.approx(0.1)
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None


def test_window_delta_counts_by_status_and_leaves_scrapes_out() -> None:
    registry, latency, counter = _registry()
    for _ in range(30):  # before the window: not counted
        latency.labels("/task", "POST", "201").observe(0.02)
    before = parse(_exposition(registry))
    for _ in range(70):
        latency.labels("/task", "POST", "201").observe(0.2)
    for _ in range(30):
        latency.labels("/task/{id}", "GET", "200").observe(0.4)
    for _ in range(5):
        latency.labels("/task", "POST", "429").observe(0.001)
    for _ in range(9):  # the scrapes themselves
        latency.labels("/metrics", "GET", "200").observe(0.003)
    counter.labels("200").inc(12)
    after = parse(_exposition(registry))

    source = ServerMetrics("http://127.0.0.1:1/metrics")
    scraper = Scraper(source, Path("k6.log"), None)
    scraper.scrapes = [(_now(), _now(), before), (_now(), _now(), after)]
    record = server_record(scraper)
    assert record["requests"] == {"200": 30, "201": 70, "429": 5}
    assert record["requests_total"] == 105
    assert record["metrics"] == {"requests": DEFAULT_REQUESTS_METRIC,
                                 "latency": DEFAULT_LATENCY_METRIC}
    # 105 observations: 5 in (0, 0.01], 70 in (0.1, 0.25], 30 in (0.25, 0.5]
    rank = 0.95 * 105
    expected_p95 = 0.25 + 0.25 * (rank - 75) / 30
    assert record["p95_ms"] == pytest.approx(expected_p95 * 1000, abs=1e-3)
    assert record["p50_ms"] == pytest.approx((0.1 + 0.15 * (52.5 - 5) / 70) * 1000, abs=1e-3)
    assert record["p95_bucket_ms"] == [250.0, 500.0]

    # another service's counter (exposed as app_requests_total), its "code" label
    assert requests_by_status(_delta(before, after), "app_requests", "/metrics") == {"200": 12}
    assert buckets(_delta(before, after), "no_such_histogram", "/metrics") == []


def test_restarted_server_and_missing_series_are_errors_not_figures() -> None:
    registry, latency, _ = _registry()
    latency.labels("/", "GET", "200").observe(0.1)
    latency.labels("/", "GET", "200").observe(0.1)
    later = parse(_exposition(registry))
    fresh, fresh_latency, _ = _registry()
    fresh_latency.labels("/", "GET", "200").observe(0.1)
    restarted = parse(_exposition(fresh))
    scraper = Scraper(ServerMetrics("http://127.0.0.1:1/metrics"), Path("k6.log"), None)
    scraper.scrapes = [(_now(), _now(), later), (_now(), _now(), restarted)]
    assert "restarted" in server_record(scraper)["error"]
    scraper = Scraper(ServerMetrics("http://127.0.0.1:1/metrics", requests="nope_total"),
                      Path("k6.log"), None)
    scraper.scrapes = [(_now(), _now(), later), (_now(), _now(), later)]
    assert server_record(scraper)["error"] == "no nope_total series at http://127.0.0.1:1/metrics"


def _delta(before: dict, after: dict) -> dict:
    from loadproof.promscrape import _delta as delta

    return delta(before, after)[0]


def _now():  # noqa: ANN202
    import datetime as dt

    return dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(("args", "message"), [
    (["--prometheus", "ftp://x/metrics"], "--prometheus 'ftp://x/metrics': expected an http"),
    (["--prometheus-rw", "localhost:9090"], "--prometheus-rw 'localhost:9090': expected"),
    (["--prometheus-requests", "http_requests_total"], "give --prometheus URL too"),
    (["--prometheus", "http://127.0.0.1:1/metrics", "--prometheus-latency", "bad name"],
     "not a Prometheus metric name"),
    (["--target-pid", "0"], "--target-pid 0: expected a process id above 0"),
])
def test_integrity_flags_are_checked_before_any_load(
        args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", "--target", "http://127.0.0.1:9", "--label", "x", "--out",
                     str(tmp_path), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_target_pid_conflicts_with_profile(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", "--profile", "baseline", "--label", "x", "--out", str(tmp_path),
                     "--target-pid", "1"])
    assert code == 2 and "--target-pid and --profile conflict" in capsys.readouterr().err


def test_unreachable_metrics_and_unknown_pid_send_no_load(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tiny_server() as url:
        code = cli.main(["run", "--target", url, "--label", "x", "--out", str(tmp_path),
                         "--prometheus", "http://127.0.0.1:9/metrics"])
        assert code == 4
        assert "--prometheus http://127.0.0.1:9/metrics: could not scrape it" \
            in capsys.readouterr().err
        # the tiny server answers JSON, not a Prometheus exposition
        code = cli.main(["run", "--target", url, "--label", "x", "--out", str(tmp_path),
                         "--prometheus", url + "/metrics"])
        assert code == 4 and "ValueError" in capsys.readouterr().err
        code = cli.main(["run", "--target", url, "--label", "x", "--out", str(tmp_path),
                         "--target-pid", "4194303"])
        assert code == 2 and "--target-pid 4194303: no such process" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_report_rows_and_cpu_chart_show_both_sides(tmp_path: Path) -> None:
    import datetime as dt

    from loadproof.compare import compare_runs
    from loadproof.conditions import write_resources
    from loadproof.integrity import cpu_over_time, has_timeline
    from loadproof.store import load_run
    from loadproof.summary import integrity_rows

    from .helpers import make_run

    runs = []
    for label, server_count, cpu in (("base", 412, 150.0), ("cand", None, 60.0)):
        run = make_run(tmp_path, label, {"s1-10vus": (10, [20.0] * 400, [200] * 400)})
        record = run.manifest["stages"][0]
        record["conditions"] = {"k6_cpu_cores": 0.3, "target_cpu_cores": cpu / 100,
                                "other_cpu_cores": 0.1, "machine_cpu_cores": 2.0}
        record["generator"] = {"limited": False, "reasons": []}
        if server_count is not None:
            record["server"] = {"requests_total": server_count, "client_requests": 400,
                                "p95_ms": 18.2, "client_p95_ms": 21.0,
                                "p95_bucket_ms": [10.0, 25.0],
                                "edges": {"clean": False}}
        start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        rows = [(start + dt.timedelta(seconds=i), name, value, 50.0)
                for i in range(5) for name, value in (("k6", 30.0), ("target", cpu),
                                                      ("machine", 190.0))]
        write_resources(rows, run.path / "stages" / record["dir"] / "resources.parquet")
        record["resources_file"] = f"stages/{record['dir']}/resources.parquet"
        run.save()
        runs.append(load_run(run.path))
    comparison = compare_runs(*runs)
    rows = integrity_rows(comparison)
    assert rows[0]["requests client / server"] == "400 / 412 (window edges not clean)"
    assert rows[0]["p95 client / server (ms)"] == "21 / 18 (bucket 10–25)"
    assert rows[1]["requests client / server"] == "—"  # not scraped: no figure made up
    assert has_timeline(comparison)
    chart = cpu_over_time(comparison)
    assert "base: machine up to 1.90 cores" in chart.alt
    assert "target up to 1.50 cores" in chart.alt and "target up to 0.60 cores" in chart.alt
    assert len(chart.figure.axes) == 2
