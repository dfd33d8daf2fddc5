"""Chart inputs aggregated where they are read: the report's charts never hold one row per
request. Each function scans a run's ``requests.parquet`` files lazily (only the columns it
needs, the stage filter pushed into the scan) and returns a frame of at most a few thousand
rows: per-second bins for time series, log-bucketed counts for distributions. The figures in
the report's tables do not come from here; they stay exact (runner/metrics.py)."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
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


# one whole-run read at a time: two runs aggregated side by side overlap one's read with the
# other's sorting, never two reads' buffers
READS = threading.Lock()


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
    memo_key = ("histogram", *_signature(run, key))
    if memo_key in _MEMO:
        histogram: pl.DataFrame = _MEMO[memo_key]
        return histogram
    files = _files(run, key)
    if not files:
        return pl.DataFrame(schema={"latency_ms": pl.Float64, "count": pl.UInt32})
    step = math.log1p(BUCKET_WIDTH)
    bucket = (pl.col("duration_ms").clip(lower_bound=_LOW_MS) / _LOW_MS).log() / step
    counts = _collect(
        pl.scan_parquet(files).select("duration_ms", "status", "expected", "stage")
        .filter((pl.col("stage") == key) & success_expr())
        .group_by(bucket.floor().cast(pl.Int64).alias("bucket"))
        .agg(pl.len().alias("count"))
        .sort("bucket")
        .select((_LOW_MS * (1 + BUCKET_WIDTH) ** (pl.col("bucket") + 1)).alias("latency_ms"),
                "count"))
    _remember(memo_key, counts)
    return counts


# the latency-over-time chart draws at most this many bins per line: per second up to ten
# minutes, wider bins (whole seconds) for longer runs, so an hour's soak draws no more points
# than a ten-minute run
MAX_BINS = 600


def quantiles_per_second(run: Run) -> tuple[pl.DataFrame, list[tuple[str, float, float]]]:
    """p50, p95 and p99 of the successful answers (2xx-3xx, or a Gatling OK, which has no
    status) in each second since the run's first request: columns ``second`` (a float, as the
    chart's x), ``p50_ms``, ``p95_ms``, ``p99_ms``, in time order, seconds without answers
    absent. And each stage's span on the same clock, ``(stage, first_s, last_s)`` in the order
    the stages started."""
    binned, spans, _ = quantiles_over_time(run, max_bins=None)
    return binned, spans


def quantiles_over_time(run: Run, max_bins: int | None = MAX_BINS) \
        -> tuple[pl.DataFrame, list[tuple[str, float, float]], int]:
    """As quantiles_per_second, in bins of the fewest whole seconds that keep the bins of the
    run's time to ``max_bins`` (1 s when None): ``second`` is each bin's start. Returns the
    bin's width in seconds too. Two lazy scans of a few columns; nothing of one row per
    request is kept. Kept per run for the process's later charts (the report draws each chart
    twice, wide and narrow)."""
    memo_key = ("over_time", max_bins, *_signature(run))
    if memo_key in _MEMO:
        kept: tuple[pl.DataFrame, list[tuple[str, float, float]], int] = _MEMO[memo_key]
        return kept[0], list(kept[1]), kept[2]
    files = _files(run)
    empty = pl.DataFrame(schema={"second": pl.Float64, "p50_ms": pl.Float64,
                                 "p95_ms": pl.Float64, "p99_ms": pl.Float64})
    if not files:
        return empty, [], 1
    scan = pl.scan_parquet(files)
    start = _collect(scan.select(pl.col("timestamp").min())).item()
    if start is None:
        return empty, [], 1
    t = (pl.col("timestamp") - start).dt.total_milliseconds() / 1000
    spans_frame = _collect(scan.group_by("stage").agg(t.min().alias("low"), t.max().alias("high"))
                           .sort("low", "stage"))
    spans = [(str(key), float(low), float(high)) for key, low, high in spans_frame.iter_rows()]
    last = max((high for _, _, high in spans), default=0.0)
    width = max(1, math.ceil((last + 1) / max_bins)) if max_bins else 1
    ok = pl.col("status").is_between(200, 399) | (pl.col("status").is_null()
                                                   & pl.col("expected").fill_null(False))
    bin_of = (pl.col("timestamp") - start).dt.total_milliseconds() // (1000 * width)
    with READS:
        answered = scan.filter(ok).select(bin_of.alias("bin"), "duration_ms").collect()
    binned = _binned_quantiles(answered["bin"].to_numpy(), answered["duration_ms"].to_numpy(),
                               width)
    del answered
    _remember(memo_key, (binned, spans, width))
    return binned, list(spans), width


_QUANTILES = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))


def _binned_quantiles(bins: np.ndarray, ms: np.ndarray, width: int) -> pl.DataFrame:
    """p50, p95 and p99 of ``ms`` in each bin (numbered from the run's start, ``width``
    seconds each), as polars' ``quantile`` (its default "nearest": the value at rank
    round((n - 1) q), halves away from zero) gives them per group: the values put in bin
    order once, then one partial sort of each bin's slice, in place."""
    columns: dict[str, list[float]] = {"second": [], **{name: [] for name, _ in _QUANTILES}}
    if len(bins):
        low = int(bins.min())
        bins = bins - low
        count = int(bins.max()) + 1
        # timsort: linear on rows that come nearly in time order, as a run's do
        ordered = ms[np.argsort(bins, kind="stable")]
        edges = np.concatenate([[0], np.cumsum(np.bincount(bins, minlength=count))])
        for index in np.flatnonzero(edges[1:] > edges[:-1]).tolist():
            part = ordered[edges[index]:edges[index + 1]]
            ranks = [int(math.floor((len(part) - 1) * q + 0.5)) for _, q in _QUANTILES]
            part.partition(sorted(set(ranks)))
            columns["second"].append(float((low + index) * width))
            for (name, _), rank in zip(_QUANTILES, ranks, strict=True):
                columns[name].append(float(part[rank]))
    return pl.DataFrame(columns, schema={name: pl.Float64 for name in columns})


# results kept for the process, by the run's request files as they are on disk
_MEMO: dict[tuple[object, ...], Any] = {}
_MEMO_LOCK = threading.Lock()


def _signature(run: Run, key: str | None = None) -> tuple[object, ...]:
    """The run's request files (of one stage key) with their sizes and modification times:
    a file rewritten since is a new key."""
    out: list[object] = [key]
    for path in _files(run, key):
        try:
            stat = path.stat()
        except OSError:
            return (*out, object())  # never equal: nothing is kept for a missing file
        out += [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    return tuple(out)


def chart_keys(run: Run, headline_stage: str | None) -> list[tuple[object, ...]]:
    """The keys under which the run's chart inputs are kept (latency over time, and the
    headline stage's histogram when there is one), as its request files are now."""
    keys: list[tuple[object, ...]] = [("over_time", MAX_BINS, *_signature(run))]
    if headline_stage is not None:
        keys.append(("histogram", *_signature(run, headline_stage)))
    return keys


def kept_to_json(keys: list[tuple[object, ...]]) -> list[dict[str, Any]]:
    """The chart inputs kept under ``keys`` (chart_keys), for another process to use
    (``loadproof report`` hands them to the notebook beside the comparison): each with the
    request files' signature it was made from, so nothing is used for files that have changed
    since. Keys kept for other runs of this process are left out."""
    out = []
    for key in keys:
        value = _MEMO.get(key)
        if value is None or not all(isinstance(part, (str, int, type(None))) for part in key):
            continue
        frame, extra = (value[0], {"spans": value[1], "width": value[2]}) \
            if key[0] == "over_time" else (value, {})
        out.append({"key": list(key), "columns": frame.to_dict(as_series=False),
                    "schema": {name: str(dtype) for name, dtype in frame.schema.items()},
                    **extra})
    return out


_DTYPES = {"Float64": pl.Float64, "UInt32": pl.UInt32, "Int64": pl.Int64}


def keep_from_json(items: list[dict[str, Any]]) -> None:
    """Chart inputs made by another process (kept_to_json), used where their files' signature
    still matches."""
    for item in items:
        frame = pl.DataFrame(item["columns"], schema={
            name: _DTYPES[dtype] for name, dtype in item["schema"].items()})
        key = tuple(item["key"])
        _remember(key, (frame, [tuple(s) for s in item["spans"]], int(item["width"]))
                  if key[0] == "over_time" else frame)


def _remember(key: tuple[object, ...], value: object) -> None:
    with _MEMO_LOCK:  # runs are aggregated side by side in threads
        if len(_MEMO) >= 16:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = value
