"""The faster paths of compare and report at 10 M requests give the figures the slower ones
gave: each resample's quantile from a window of histogram columns, the per-second quantiles
of the latency-over-time chart from the scan, per-endpoint percentiles from partial sorts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from loadproof import aggregate, stats
from loadproof.endpoints import _nearest_ranks
from loadproof.store import load_run

from .conftest import SAMPLE


def _all_columns_quantile_draws(b: stats.Blocks, weights: np.ndarray, q: float) -> np.ndarray:
    """The quantile of each resample over every histogram column (the former computation)."""
    used, running = stats._histogram(b)
    hist = np.diff(running, axis=1, prepend=0)
    weights = np.vstack([np.ones((1, b.count)), weights])
    cumulative = np.cumsum(weights @ hist, axis=1)
    targets = np.ceil(cumulative[:, -1] * q)
    index = np.minimum((cumulative < targets[:, None]).sum(axis=1), len(used) - 1)
    bucket = used[index]
    bucketed = np.sqrt(stats._EDGES[bucket] * stats._EDGES[bucket + 1])
    return np.asarray(bucketed[1:] * (stats._exact_quantile(b, q) / bucketed[0]))


def _blocks(rng: np.random.Generator, blocks: int, per_block: int, *, drift: bool) -> stats.Blocks:
    block = np.repeat(np.arange(blocks), per_block)
    # with drift the blocks differ a lot, so resamples' quantiles spread over many buckets
    scale = np.exp(np.linspace(0, 4, blocks))[block] if drift else 1.0
    ms = rng.lognormal(3, 1, len(block)) * scale
    requests = np.bincount(block, minlength=blocks).astype(np.int64)
    return stats.Blocks(requests, requests.copy(), ms, block, float(blocks))


@pytest.mark.parametrize("drift", [False, True])
@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_resample_quantiles_from_a_window_are_those_over_every_column(drift: bool,
                                                                     q: float) -> None:
    rng = np.random.default_rng(7)
    b = _blocks(rng, 40, 300, drift=drift)
    weights = rng.multinomial(b.count, np.full(b.count, 1 / b.count), size=300).astype(float)
    assert np.array_equal(stats._quantile_draws(b, weights, q),
                          _all_columns_quantile_draws(b, weights, q))


def _old_over_time(run_dir: Path) -> tuple[pl.DataFrame, list[tuple[str, float, float]]]:
    """The latency-over-time chart's data as it was made: every row read, sorted, binned."""
    run = load_run(run_dir)
    frame = pl.concat([pl.read_parquet(run.path / r["requests_file"],
                                       columns=["timestamp", "duration_ms", "status",
                                                "expected", "stage"])
                       for r in run.usable_stages()]).sort("timestamp")
    start = frame["timestamp"].min()
    frame = frame.with_columns(
        ((pl.col("timestamp") - start).dt.total_milliseconds() / 1000).alias("t"))
    spans = [(str(key[0]), part["t"].min(), part["t"].max())
             for key, part in frame.group_by("stage", maintain_order=True)]
    ok = pl.col("status").is_between(200, 399) | (pl.col("status").is_null()
                                                   & pl.col("expected").fill_null(False))
    binned = (frame.filter(ok).with_columns(pl.col("t").floor().alias("second"))
              .group_by("second")
              .agg(pl.col("duration_ms").quantile(0.50).alias("p50_ms"),
                   pl.col("duration_ms").quantile(0.95).alias("p95_ms"),
                   pl.col("duration_ms").quantile(0.99).alias("p99_ms"))
              .sort("second"))
    return binned, spans  # type: ignore[return-value]


@pytest.mark.parametrize("arm", ["baseline", "optimized", "probe-baseline", "probe-optimized"])
def test_per_second_quantiles_from_the_scan_are_the_charts_former_figures(arm: str) -> None:
    binned, spans = aggregate.quantiles_per_second(load_run(SAMPLE / arm))
    old_binned, old_spans = _old_over_time(SAMPLE / arm)
    assert binned.equals(old_binned)
    assert spans == old_spans


@pytest.mark.parametrize("n", [1, 2, 3, 19, 20, 1001])
def test_endpoint_percentiles_from_a_partial_sort_are_the_nearest_ranks(n: int) -> None:
    values = np.round(np.random.default_rng(n).lognormal(3, 1, n), 1)
    qs = (0.5, 0.95, 0.99)
    assert _nearest_ranks(values, qs) == [stats.percentile(np.sort(values), q) for q in qs]
