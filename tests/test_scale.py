"""The report's data path at scale: one comparison per report (handed to the notebook as
comparison.json), exact stage figures without sorted copies, chart inputs aggregated."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from loadproof import aggregate, metrics
from loadproof import notebook as nb
from loadproof.compare import compare_runs
from loadproof.errors import RunStoreError
from loadproof.handoff import comparison_from_dict, read_comparison, release_samples
from loadproof.metrics import Latency, stage_metrics
from loadproof.stats import percentile
from loadproof.store import load_run

from .conftest import SAMPLE

PAIRS = [("baseline", "optimized"), ("probe-baseline", "probe-optimized")]


@pytest.mark.parametrize("seed,n", [(0, 1), (1, 2), (2, 7), (3, 100), (4, 10_001)])
def test_latency_from_unsorted_values_is_the_nearest_rank_figure(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.round(rng.lognormal(3, 1, n), 1)  # rounding makes ties, as k6's ms do
    assert Latency.of_values(values.copy()) == Latency.of(np.sort(values))
    assert Latency.of_values(np.empty(0)) == Latency.of(np.empty(0))


@pytest.mark.parametrize("base,cand", PAIRS)
def test_comparison_json_reads_back_as_the_same_comparison(base: str, cand: str) -> None:
    comparison = compare_runs(load_run(SAMPLE / base), load_run(SAMPLE / cand))
    written = json.loads(json.dumps(comparison.to_dict(), default=str))
    again = comparison_from_dict(written)
    assert again.to_dict() == comparison.to_dict()
    for mine, theirs in ((again.baseline_metrics, comparison.baseline_metrics),
                         (again.candidate_metrics, comparison.candidate_metrics)):
        for a, b in zip(mine, theirs, strict=True):
            assert a.records == b.records  # rebuilt from the manifest, as stage_metrics groups
            assert [p.records for p in a.per_repeat] == [p.records for p in b.per_repeat]
    assert [s.baseline.key for s in again.stages] == [s.key for s in comparison.stages]


def test_report_sections_from_comparison_json_match_a_fresh_comparison(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = nb.load_report(SAMPLE / "baseline", SAMPLE / "optimized", title="t")
    path = tmp_path / "comparison.json"
    path.write_text(json.dumps(fresh.comparison.to_dict(), default=str))

    def no_requests(*_: object, **__: object) -> None:
        raise AssertionError("the notebook compared the runs again")

    monkeypatch.setattr(metrics, "stage_metrics", no_requests)
    monkeypatch.setattr(nb, "compare_runs", no_requests)
    handed = nb.load_report(SAMPLE / "baseline", SAMPLE / "optimized", title="t",
                            comparison_file=str(path))
    for achievement in (handed.achievement, fresh.achievement):
        achievement.pop("generated_at")
    assert handed.achievement == fresh.achievement
    for section in (nb.header, nb.dashboard, nb.stage_results, nb.ratios, nb.capacity,
                    nb.caveats, nb.talking_points, nb.integrity, nb.methodology):
        assert section(handed).data == section(fresh).data, section.__name__


def test_released_samples_keep_every_figure() -> None:
    comparison = compare_runs(load_run(SAMPLE / "baseline"), load_run(SAMPLE / "optimized"))
    before = comparison.to_dict()
    release_samples(comparison)
    assert comparison.to_dict() == before
    assert all(m.blocks is None for m in comparison.baseline_metrics)


def test_a_file_that_is_no_comparison_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "comparison.json"
    bad.write_text('{"comparison_id": "cmp-x"}')
    with pytest.raises(RunStoreError, match="comparison.json"):
        read_comparison(bad)


def _old_over_time(run_path: Path) -> pl.DataFrame:
    """The per-second p95 as the chart computed it from every request in memory."""
    run = load_run(run_path)
    frame = pl.concat([pl.read_parquet(run.path / r["requests_file"],
                                       columns=["timestamp", "duration_ms", "status", "expected"])
                       for r in run.usable_stages()]).sort("timestamp")
    start = frame["timestamp"].min()
    ok = pl.col("status").is_between(200, 299) | (pl.col("status").is_null()
                                                   & pl.col("expected").fill_null(False))
    return (frame.filter(ok)
            .with_columns(((pl.col("timestamp") - start).dt.total_milliseconds() // 1000)
                          .alias("second"))
            .group_by("second").agg(pl.col("duration_ms").quantile(0.95).alias("p95_ms"))
            .sort("second"))


@pytest.mark.parametrize("arm", ["baseline", "optimized", "probe-baseline"])
def test_per_second_bins_are_the_charts_figures(arm: str) -> None:
    assert aggregate.p95_per_second(load_run(SAMPLE / arm)).equals(_old_over_time(SAMPLE / arm))


@pytest.mark.parametrize("arm", ["baseline", "optimized"])
def test_latency_histogram_holds_every_success_within_its_bucket(arm: str) -> None:
    run = load_run(SAMPLE / arm)
    for m in stage_metrics(run):
        counts = aggregate.latency_histogram(run, m.key)
        assert int(counts["count"].sum()) == m.successes
        if not m.successes:
            continue
        assert len(counts) < 5_000  # a chart input, not one row per request
        cumulative = np.cumsum(counts["count"].to_numpy())
        edges = counts["latency_ms"].to_numpy()
        for q, exact in ((0.5, m.latency_ok.p50_ms), (0.95, m.latency_ok.p95_ms)):
            assert exact is not None
            rank = max(math.ceil(m.successes * q), 1)
            drawn = float(edges[np.searchsorted(cumulative, rank)])
            assert exact <= drawn * (1 + 1e-9)
            assert drawn <= max(exact, 1e-3) * (1 + aggregate.BUCKET_WIDTH) ** 2


def test_stage_figures_read_one_stage_at_a_time() -> None:
    run = load_run(SAMPLE / "baseline")
    frames = {r["key"]: metrics.read_requests(run, r["key"]) for r in run.usable_stages()}
    every = metrics.read_requests(run)
    assert sum(len(f) for f in frames.values()) == len(every)
    assert "stage" not in next(iter(frames.values())).columns
    for m in stage_metrics(run):
        ok = every.filter(pl.col("stage") == m.key)
        mask, _, _ = metrics.outcomes(ok)
        assert m.latency_ok.p95_ms == percentile(np.sort(ok["duration_ms"].to_numpy()[mask]), 0.95)


def test_the_achievement_written_beside_the_comparison_is_the_reports(tmp_path: Path) -> None:
    from loadproof.achievements import write_achievement

    fresh = nb.load_report(SAMPLE / "baseline", SAMPLE / "optimized", title="t",
                           unit_cost=100.0)
    path = tmp_path / "comparison.json"
    path.write_text(json.dumps(fresh.comparison.to_dict(), default=str))
    write_achievement(fresh.achievement, tmp_path / "achievement.json")
    handed = nb.load_report(SAMPLE / "baseline", SAMPLE / "optimized", title="other title",
                            comparison_file=str(path))
    assert handed.achievement == fresh.achievement  # the CLI's record, not one built again
    other = dict(fresh.achievement, comparison_id="cmp-0000000000000000")
    (tmp_path / "achievement.json").write_text(json.dumps(other))
    rebuilt = nb.load_report(SAMPLE / "baseline", SAMPLE / "optimized", title="other title",
                             comparison_file=str(path))
    assert rebuilt.achievement["title"] == "other title"


def test_bootstrap_buckets_are_the_searchsorted_buckets() -> None:
    from loadproof import stats

    rng = np.random.default_rng(0)
    edges = stats._EDGES
    values = np.concatenate([rng.lognormal(3, 2, 200_000), edges, np.nextafter(edges, 0),
                             np.nextafter(edges, np.inf),
                             [0.0, -1.0, 1e-9, 1e7, np.inf, np.nan, 1e300]])
    expected = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    assert np.array_equal(stats._bucket_of(values), expected)


def test_a_comparison_file_of_other_runs_is_refused(tmp_path: Path) -> None:
    from loadproof.errors import UsageError

    comparison = compare_runs(load_run(SAMPLE / "baseline"), load_run(SAMPLE / "optimized"))
    path = tmp_path / "comparison.json"
    path.write_text(json.dumps(comparison.to_dict(), default=str))
    with pytest.raises(UsageError, match="candidate_run"):
        nb.load_report(SAMPLE / "baseline", SAMPLE / "probe-optimized", title="t",
                       comparison_file=str(path))
