"""Chart inputs aggregated where they are read: the report's charts never hold one row per
request. Each function scans a run's ``requests.parquet`` files lazily (only the columns it
needs, the stage filter pushed into the scan) and returns a frame of at most a few thousand
rows: per-second bins for time series, log-bucketed counts for distributions. The figures in
the report's tables do not come from here; they stay exact (runner/metrics.py)."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from .store import Run

# relative width of a distribution bucket: a latency is drawn at its bucket's upper edge, at
# most 0.5% above its value
BUCKET_WIDTH = 0.005
_LOW_MS = 1e-3  # the lowest bucket's lower edge (1 µs)


def _files(run: Run, key: str | None = None) -> list[Path]:
    """The run's request files (of one stage key), each once: imported stages may share one."""
    records = [r for r in run.usable_stages()
               if r.get("requests_file") and (key is None or r["key"] == key)]
    return list(dict.fromkeys(run.path / r["requests_file"] for r in records))


def _collect(frame: pl.LazyFrame) -> pl.DataFrame:
    return frame.collect(engine="streaming")


def success_expr() -> pl.Expr:
    """A request's success as metrics.outcomes decides it: k6's expected_response where the
    data carries it, else a 2xx-3xx status; a 429 never counts."""
    by_status = pl.col("status").is_between(200, 399)
    expected = pl.when(pl.col("expected").is_not_null()).then(pl.col("expected")) \
        .otherwise(by_status)
    return expected & (pl.col("status") != 429).fill_null(True)


def p95_per_second(run: Run) -> pl.DataFrame:
    """p95 of the 2xx answers (and a Gatling OK, which has no status) in each second since the
    run's first request (its stages back to back): columns ``second``, ``p95_ms``, in time
    order."""
    files = _files(run)
    if not files:
        return pl.DataFrame(schema={"second": pl.Int64, "p95_ms": pl.Float64})
    scan = pl.scan_parquet(files).select("timestamp", "duration_ms", "status", "expected")
    start = _collect(scan.select(pl.col("timestamp").min())).item()
    # a Gatling OK has no status in its log: its success is the expected column
    ok = pl.col("status").is_between(200, 299) | (pl.col("status").is_null()
                                                   & pl.col("expected").fill_null(False))
    return _collect(
        scan.filter(ok)
        .with_columns(((pl.col("timestamp") - start).dt.total_milliseconds() // 1000)
                      .alias("second"))
        .group_by("second").agg(pl.col("duration_ms").quantile(0.95).alias("p95_ms"))
        .sort("second"))


def latency_histogram(run: Run, key: str) -> pl.DataFrame:
    """The successful latencies of one stage (repeats pooled) in log buckets of BUCKET_WIDTH:
    columns ``latency_ms`` (the bucket's upper edge) and ``count``, ascending."""
    files = _files(run, key)
    if not files:
        return pl.DataFrame(schema={"latency_ms": pl.Float64, "count": pl.UInt32})
    step = math.log1p(BUCKET_WIDTH)
    bucket = (pl.col("duration_ms").clip(lower_bound=_LOW_MS) / _LOW_MS).log() / step
    return _collect(
        pl.scan_parquet(files).select("duration_ms", "status", "expected", "stage")
        .filter((pl.col("stage") == key) & success_expr())
        .group_by(bucket.floor().cast(pl.Int64).alias("bucket"))
        .agg(pl.len().alias("count"))
        .sort("bucket")
        .select((_LOW_MS * (1 + BUCKET_WIDTH) ** (pl.col("bucket") + 1)).alias("latency_ms"),
                "count"))


def quantiles_per_second(run: Run) -> tuple[pl.DataFrame, list[tuple[str, float, float]]]:
    """p50, p95 and p99 of the successful answers (2xx-3xx, or a Gatling OK, which has no
    status) in each second since the run's first request: columns ``second`` (a float, as the
    chart's x), ``p50_ms``, ``p95_ms``, ``p99_ms``, in time order, seconds without answers
    absent. And each stage's span on the same clock, ``(stage, first_s, last_s)`` in the order
    the stages started. Two lazy scans of four columns; nothing of one row per request is
    kept."""
    files = _files(run)
    empty = pl.DataFrame(schema={"second": pl.Float64, "p50_ms": pl.Float64,
                                 "p95_ms": pl.Float64, "p99_ms": pl.Float64})
    if not files:
        return empty, []
    scan = pl.scan_parquet(files)
    start = _collect(scan.select(pl.col("timestamp").min())).item()
    if start is None:
        return empty, []
    t = (pl.col("timestamp") - start).dt.total_milliseconds() / 1000
    spans = _collect(scan.group_by("stage").agg(t.min().alias("low"), t.max().alias("high"))
                     .sort("low", "stage"))
    ok = pl.col("status").is_between(200, 399) | (pl.col("status").is_null()
                                                   & pl.col("expected").fill_null(False))
    binned = _collect(
        scan.select("timestamp", "duration_ms", "status", "expected").filter(ok)
        .group_by(t.floor().alias("second"))
        .agg(pl.col("duration_ms").quantile(0.50).alias("p50_ms"),
             pl.col("duration_ms").quantile(0.95).alias("p95_ms"),
             pl.col("duration_ms").quantile(0.99).alias("p99_ms"))
        .sort("second"))
    return binned, [(str(key), float(low), float(high)) for key, low, high in spans.iter_rows()]
