"""Every chart in the report carries alt text that says what it shows, taken from the data."""

from __future__ import annotations

import logging
import re
from html import unescape
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from loadproof.charts import ALL_CHARTS
from loadproof.compare import compare_runs
from loadproof.report import export_html

from .helpers import make_run

METRIC_WORDS = {
    "main_latency": "p50 and p95 latency",
    "latency_vs_load": "p50, p95 and p99 latency",
    "throughput_vs_load": "throughput and goodput",
    "outcome_shares": "share of requests that succeeded, were rate-limited",
    "latency_over_time": "p95 latency of successful answers per second",
    "latency_ecdf": "distribution (ECDF) of the latency",
}


def test_each_chart_describes_its_arms_metric_stages_and_values(tmp_path: Path) -> None:
    ok = ([20.0] * 40, [200] * 40)
    base = make_run(tmp_path, "before-pool", {"s1-10vus": (10, *ok),
                                              "s2-50vus": (50, [90.0] * 40, [200] * 40),
                                              "s3-90vus": (90, [5.0] * 20, [200] * 5 + [503] * 15)})
    cand = make_run(tmp_path, "after-pool", {"s1-10vus": (10, *ok),
                                             "s2-50vus": (50, [30.0] * 40, [200] * 40),
                                             "s3-90vus": (90, [40.0] * 40, [200] * 30 + [429] * 10)})
    comparison = compare_runs(base, cand)
    alts = {}
    for name, draw in ALL_CHARTS.items():
        chart = draw(comparison)
        plt.close(chart.figure)
        alts[name] = chart.alt
        assert "before-pool (baseline)" in chart.alt and "after-pool (candidate)" in chart.alt
        assert METRIC_WORDS[name] in chart.alt
    for name in ("latency_vs_load", "throughput_vs_load", "outcome_shares"):
        assert "3 stages from 10 to 90 virtual users" in alts[name], alts[name]
    # values come from the runs: the heaviest stage with a latency point, the worst share
    assert "p95 at 90 virtual users: before-pool (baseline) no figure, after-pool (candidate) " \
        "40 ms." in alts["latency_vs_load"]
    assert "fewer than 30 successful requests: before-pool (baseline) s3-90vus." \
        in alts["latency_vs_load"]
    assert "Goodput at 90 virtual users: before-pool (baseline) 0 req/s, after-pool (candidate) " \
        in alts["throughput_vs_load"]
    assert "at stage s2-50vus (50 virtual users)" in alts["latency_ecdf"]  # the headline stage
    assert "before-pool (baseline) 40 answers, median 90 ms, p95 90 ms" in alts["latency_ecdf"]
    assert "before-pool (baseline) 25.00% at 90 virtual users (0.00% 429, 75.00% errors)" \
        in alts["outcome_shares"]
    assert "after-pool (candidate) 75.00% at 90 virtual users (25.00% 429" \
        in alts["outcome_shares"]


def test_a_single_run_chart_names_the_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, "solo", {"s1-5vus": (5, [12.0] * 50, [200] * 50)})
    chart = ALL_CHARTS["throughput_vs_load"](compare_runs(run, run))
    plt.close(chart.figure)
    assert "for the run solo" in chart.alt and "one stage, 5 virtual users" in chart.alt


def test_a_run_without_successes_still_shows_its_stages_over_time(tmp_path: Path) -> None:
    good = make_run(tmp_path, "good", {"s1-10vus": (10, [20.0] * 40, [200] * 40),
                                       "s2-20vus": (20, [30.0] * 40, [200] * 40)})
    failed = make_run(tmp_path, "failed", {"s1-10vus": (10, [5.0] * 40, [500] * 40),
                                           "s2-20vus": (20, [5.0] * 40, [500] * 40)})
    chart = ALL_CHARTS["latency_over_time"](compare_runs(good, failed))
    plt.close(chart.figure)
    shown = [[text.get_text() for text in ax.texts] for ax in chart.figure.axes]
    assert shown == [["10 users", "20 users"], ["10 users", "20 users"]], shown
    assert "failed (candidate) no successful answers" in chart.alt


def test_exported_report_has_alt_text_on_every_image(sample_report: tuple[Path, Path, str],
                                                     tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The report notebook as `loadproof report` executed it on the samples, probes included
    (the session's shared sample_report, tests/conftest.py), exported here again to HTML."""
    _, out, log = sample_report
    assert log.endswith("exit 0"), log[-3000:]
    executed = out / "report.ipynb"
    with caplog.at_level(logging.WARNING):
        html = export_html(executed, tmp_path / "report.html").read_text()
    assert "Alternative text is missing" not in caplog.text
    images = re.findall(r"<img\b[^>]*>", html)
    # the first screen's chart, over time, distribution, requests served, the probe's (the
    # outcomes chart is left out: every request succeeded)
    assert len(images) == 5
    alts = [unescape(m.group(1)) if (m := re.search(r'\balt="([^"]*)"', tag)) else ""
            for tag in images]
    assert len(set(alts)) == 5, alts  # each says what its own chart shows
    for alt in alts[:4]:
        assert "baseline" in alt and "optimized (candidate)" in alt
        assert "4 stages from 10 to 150 virtual users" in alt or "s4-150vus" in alt
    assert "probe-baseline (baseline)" in alts[4] and "probe-optimized (candidate)" in alts[4]
    assert "5 stages from 250 to 1,250 requests/s" in alts[4]
    for alt, words in zip(alts, ["p50 and p95 latency", "per second", "ECDF", "goodput",
                                 "latency"], strict=True):
        assert words in alt


def test_claims_line_separates_each_value_from_what_it_measures() -> None:
    from loadproof.reportview import claims_text

    achievement = {"measurements": {"capacity_increase": {"verdict": "improved"},
                                    "latency_improvement": {"verdict": "trade-off"}},
                   "metrics": {"capacity_increase": "≥1.00x", "latency_improvement": "1.57x (p95)"}}
    assert claims_text(achievement) == \
        "1.57x p95 latency: trade-off; ≥1.00x capacity under SLO: improved"
