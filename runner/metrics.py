"""Per-stage figures of a run, from requests.parquet (k6's summary.json is a cross-check).

Outcomes: rate-limited is a 429 answer; success is any other answer k6 itself counted as
expected (its ``expected_response`` tag, i.e. the script's responseCallback: 2xx and 3xx by
default, so each redirect hop counts), or a 2xx-3xx status where the data does not carry that
tag; everything else -- other answers, timeouts, connection errors (status 0) -- is an error.
``success_source`` says which definition a stage used. Latency is reported for successful
requests (the figure a user waits for) and for all requests. Repeats are pooled from their
samples.

Durations (the divisor of every rate), ``duration_source`` per stage: a stage run by loadproof
is divided by its planned duration unless its measured load window is shorter (an interrupted
or aborted stage), which then counts, clipped to the plan; the window comes from the stage
record's ``measured_s``, else k6's own test duration in its summary, else the record's
``started_at``/``ended_at``, each less the warm-up. Imported stages carry the window measured
at import (k6's summary of the same requests, else the requests' and iterations' timestamps,
as fine as the file's time format)."""

from __future__ import annotations

import copy
import datetime as dt
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from .errors import RunStoreError
from .ingest import summary_values
from .stats import BlockIds, Blocks, FloatArray, bucket_of, count_ids, nearest_ranks, percentile
from .store import Run, read_json

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}


@dataclass
class Latency:
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    count: int

    @classmethod
    def of_values(cls, values_ms: FloatArray,
                  buckets: NDArray[np.int32] | None = None) -> Latency:
        """The same figures as :meth:`of` from values in any order, without a sorted or
        partially sorted copy of them (``stats.nearest_ranks``; ``buckets`` are
        ``stats.bucket_of(values_ms)`` when already made)."""
        n = len(values_ms)
        if n == 0:
            return cls.of(values_ms)
        ranks = [min(max(math.ceil(n * q), 1) - 1, n - 1) for q in (0.50, 0.90, 0.95, 0.99)]
        p50, p90, p95, p99, top = nearest_ranks(values_ms, [*ranks, n - 1], buckets)
        return cls(p50_ms=p50, p90_ms=p90, p95_ms=p95, p99_ms=p99, max_ms=top, count=n)

    @classmethod
    def of(cls, sorted_ms: FloatArray) -> Latency:
        return cls(p50_ms=percentile(sorted_ms, 0.50), p90_ms=percentile(sorted_ms, 0.90),
                   p95_ms=percentile(sorted_ms, 0.95), p99_ms=percentile(sorted_ms, 0.99),
                   max_ms=float(sorted_ms[-1]) if len(sorted_ms) else None,
                   count=len(sorted_ms))


@dataclass
class StageMetrics:
    key: str
    index: int
    level: int | None
    model: str | None
    repeats: list[int]
    status: str
    requests: int
    successes: int
    rate_limited: int
    errors: int
    duration_s: float
    throughput_rps: float | None
    goodput_rps: float | None
    success_rate: float | None
    rate_limited_share: float | None
    error_share: float | None
    dropped_iterations: int | None
    latency_ok: Latency
    latency_all: Latency
    summary_p95_ms: float | None = None  # k6's own figure, for the cross-check
    summary_only: bool = False  # imported from a summary alone: no samples, no intervals
    mean_ok_ms: float | None = None  # mean latency of successful answers (distribution guard)
    # which definition of success the figures use: "expected_response" (k6's tag, 429 apart),
    # "status 2xx-3xx" (the tag was not recorded), or "k6 summary (http_req_failed)"
    success_source: str = "status 2xx-3xx"
    # where duration_s comes from: "planned", "measured (...)", "k6 summary", "timestamps (1 s)"
    duration_source: str = "planned"
    per_repeat: list[StageMetrics] = field(default_factory=list, repr=False)
    # 1-second blocks for the within-run bootstrap; not serialized
    blocks: Blocks | None = field(default=None, repr=False)
    # each stage record this figure is made of (windows, conditions, hosts); not serialized
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        # field by field: asdict would deep-copy the samples and blocks only to drop them
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)
                if f.name not in ("blocks", "records", "per_repeat")}
        data["latency_ok"], data["latency_all"] = asdict(self.latency_ok), asdict(self.latency_all)
        data["per_repeat"] = [r.to_dict() for r in self.per_repeat]
        return data


_COLUMNS = ["duration_ms", "status", "expected", "repeat", "timestamp"]


def read_requests(run: Run, key: str | None = None) -> pl.DataFrame:
    """The columns the figures need, of one stage key (the filter pushed into the scan, so
    only that stage's rows are read) or of every stage."""
    files = list(dict.fromkeys(run.requests_files()))  # imported stages may share a file
    if key is not None:
        files = list(dict.fromkeys(run.path / r["requests_file"] for r in run.usable_stages()
                                   if r["key"] == key and r.get("requests_file")))
    if not files:
        raise RunStoreError(f"run {run.run_id} has no request data (no stage finished with "
                            f"requests.parquet) in {run.path}", path=run.path)
    try:
        scan = pl.scan_parquet(files)
        if key is not None:
            return scan.filter(pl.col("stage") == key).select(_COLUMNS).collect()
        return scan.select([*_COLUMNS, "stage"]).collect()
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise RunStoreError(f"run {run.run_id}: cannot read request data ({exc})",
                            path=run.path) from exc


def _summary_p95(run: Run, records: list[dict[str, Any]]) -> float | None:
    if len(records) != 1 or not records[0].get("summary_file"):
        return None
    try:
        summary = read_json(run.path / records[0]["summary_file"], what="k6 summary")
    except RunStoreError:
        return None
    values = summary_values(summary.get("metrics") or {}, "http_req_duration{scenario:main}",
                            "http_req_duration")
    value = values.get("p(95)") if values is not None else None
    return float(value) if value is not None else None


SUCCESS_FROM_TAG = "expected_response"
SUCCESS_FROM_STATUS = "status 2xx-3xx"
# a measured window this close to the plan agrees with it (k6 starts and stops within it)
_AGREES = 0.99


def outcomes(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, str]:
    """(success mask, 429 mask, success_source) of request rows."""
    status = frame["status"].to_numpy()
    limited = status == 429
    expected = frame["expected"]
    if expected.null_count() == 0:  # the tag everywhere: no status ranges to look at
        return expected.to_numpy() & ~limited, limited, SUCCESS_FROM_TAG
    by_status = (status >= 200) & (status < 400)
    known = expected.is_not_null().to_numpy()
    if known.all():
        source = SUCCESS_FROM_TAG
    elif not known.any():
        source = SUCCESS_FROM_STATUS
    else:
        source = f"{SUCCESS_FROM_TAG} ({SUCCESS_FROM_STATUS} where the tag is missing)"
    ok = np.where(known, expected.fill_null(False).to_numpy(), by_status) & ~limited
    return ok, limited, source


def _seconds_between(start: Any, end: Any) -> float | None:
    try:
        a = dt.datetime.fromisoformat(str(start))
        b = dt.datetime.fromisoformat(str(end))
    except (TypeError, ValueError):
        return None
    return (b - a).total_seconds()


def _summary_run_duration(run: Run, record: dict[str, Any]) -> float | None:
    """k6's own test duration from a stage's summary: state.testRunDurationMs (handleSummary)
    or http_reqs count / rate (k6 divides by that same duration)."""
    rel = record.get("summary_file")
    if not rel:
        return None
    try:
        summary = read_json(run.path / rel, what="k6 summary")
    except RunStoreError:
        return None
    state_ms = (summary.get("state") or {}).get("testRunDurationMs")
    if isinstance(state_ms, (int, float)) and state_ms > 0:
        return float(state_ms) / 1000
    reqs = summary_values(summary.get("metrics") or {}, "http_reqs") or {}
    count, rate = reqs.get("count"), reqs.get("rate")
    if count and rate:
        return float(count) / float(rate)
    return None


def stage_duration(record: dict[str, Any], run: Run | None) -> tuple[float | None, str]:
    """One stage record's duration and where it came from (see the module docstring)."""
    planned = float(record["duration_s"]) if record.get("duration_s") else None
    warmup = float(record.get("warmup_s") or 0.0)
    recorded = (f"measured ({record['measured_from']})" if record.get("measured_from")
                else "measured (stage record)")
    if planned is None:  # imported, or a script's stage of no set length: as measured
        measured = record.get("measured_s")
        if measured is None:
            return None, "timestamps"
        return float(measured), str(record.get("duration_source") or recorded)
    measured, how = None, ""
    if record.get("measured_s") is not None:
        measured, how = float(record["measured_s"]), recorded
    if measured is None and run is not None:
        test = _summary_run_duration(run, record)
        if test is not None:
            measured, how = test - warmup, "measured (k6 summary)"
    if measured is None:
        wall = _seconds_between(record.get("started_at"), record.get("ended_at"))
        if wall is not None:
            measured, how = wall - warmup, "measured (stage start to end)"
    if measured is None or measured >= _AGREES * planned:
        return planned, "planned"
    return min(max(measured, 0.0), planned), how


def _build(key: str, records: list[dict[str, Any]], frame: pl.DataFrame,
           run: Run, *, blocks: bool = True, consume: bool = False) -> StageMetrics:
    """A stage's figures from its rows. With ``consume`` the frame's columns are taken out of
    it as they are turned into arrays, so that no column is held twice."""

    def column(name: str) -> pl.Series:
        return frame.drop_in_place(name) if consume else frame[name]

    requests = len(frame)
    ok_mask, limited_mask, success_source = outcomes(frame)
    if consume:
        frame.drop_in_place("status")
        frame.drop_in_place("expected")
    limited = int(limited_mask.sum())
    successes = int(ok_mask.sum())
    parts = [stage_duration(r, run) for r in records]
    sources = list(dict.fromkeys(source for _, source in parts))
    if records and all(d is not None for d, _ in parts):
        duration_s = float(sum(d for d, _ in parts if d is not None))
        duration_source = " + ".join(sources)
    elif requests:  # an imported stage stored before windows were measured
        ts = frame["timestamp"]
        span = (ts.max() - ts.min()).total_seconds()  # type: ignore[operator, union-attr]
        duration_s = float(span) if span and span > 0 else 0.0
        duration_source = "timestamps (first to last response)"
    else:
        duration_s, duration_source = 0.0, "none"
    block = _block_numbers(column("timestamp"), column("repeat")
                           if "repeat" in frame.columns else None) \
        if blocks and requests else None
    durations = column("duration_ms").to_numpy().astype(np.float64, copy=False)
    ok_ms = durations[ok_mask]
    # each latency's histogram bucket, made once: for the exact percentiles and the bootstrap
    buckets = bucket_of(durations)
    ok_buckets = buckets[ok_mask]
    latency_all = Latency.of_values(durations, buckets)
    del buckets, durations
    latency_ok = Latency.of_values(ok_ms, ok_buckets)
    dropped_values = [r.get("dropped_iterations") for r in records]
    dropped = (int(sum(d for d in dropped_values if d is not None))
               if any(d is not None for d in dropped_values) else None)
    first = records[0] if records else {}
    statuses = {r.get("status", "complete") for r in records}
    return StageMetrics(
        key=key, index=int(first.get("index", 0)), level=first.get("level"),
        model=first.get("model"), repeats=sorted(int(r.get("repeat", 1)) for r in records),
        blocks=_blocks(block, ok_mask, ok_ms, ok_buckets, latency_ok, duration_s)
        if blocks else None,
        mean_ok_ms=float(ok_ms.mean()) if len(ok_ms) else None,
        records=list(records),
        status="complete" if statuses == {"complete"} else "incomplete",
        requests=requests, successes=successes, rate_limited=limited,
        errors=requests - successes - limited, duration_s=duration_s,
        throughput_rps=requests / duration_s if duration_s > 0 else None,
        goodput_rps=successes / duration_s if duration_s > 0 else None,
        success_rate=successes / requests if requests else None,
        rate_limited_share=limited / requests if requests else None,
        error_share=(requests - successes - limited) / requests if requests else None,
        dropped_iterations=dropped,
        latency_ok=latency_ok, latency_all=latency_all,
        summary_p95_ms=_summary_p95(run, records), success_source=success_source,
        duration_source=duration_source,
    )


def _block_numbers(timestamps: pl.Series, repeats: pl.Series | None) -> BlockIds:
    """Each request's 1-second block, from the first request's second (the within-run
    bootstrap's unit)."""
    micros = timestamps.dt.epoch("us").to_numpy()
    del timestamps
    # seconds counted from each repeat's own first request, numbered densely across repeats:
    # the hours between pooled repeats are no empty blocks
    block: BlockIds
    if repeats is None or repeats.min() == repeats.max():
        # one repeat: no sort of every row to find that out
        if micros.dtype == np.int64 and micros.flags.writeable:  # a copy of our own
            micros -= micros.min()
            micros //= 1_000_000
            return micros.astype(np.int32)
        return ((micros - micros.min()) // 1_000_000).astype(np.int64, copy=False)
    values = repeats.to_numpy()
    distinct = np.unique(values)
    second = np.zeros(len(values), dtype=np.int64)
    for value in distinct:
        rows = values == value
        second[rows] = (micros[rows] - micros[rows].min()) // 1_000_000
    key = values.astype(np.int64) * (int(second.max()) + 1) + second
    _, inverse = np.unique(key, return_inverse=True)
    block = np.asarray(inverse, dtype=np.int64).ravel()
    return block


def _blocks(block: BlockIds | None, ok_mask: Any, ok_ms: FloatArray,
            ok_buckets: NDArray[np.int32], latency_ok: Latency, duration_s: float) -> Blocks:
    """The within-run bootstrap's blocks of a stage: ``block`` is each request's block
    (None: no requests), ``ok_ms`` the successful latencies in the frame's order,
    ``ok_buckets`` their histogram buckets, ``latency_ok`` their figures."""
    if block is None:
        empty = np.empty(0, dtype=np.int64)
        return Blocks(empty, empty, np.empty(0), empty, duration_s)
    count = int(block.max()) + 1
    requests = count_ids(block, count)
    ok_block = block[ok_mask]
    del block
    successes = count_ids(ok_block, count)
    known = {0.5: latency_ok.p50_ms, 0.95: latency_ok.p95_ms, 0.99: latency_ok.p99_ms}
    return Blocks(requests, successes, ok_ms, ok_block, duration_s,
                  quantiles={q: v for q, v in known.items() if v is not None},
                  ok_bucket=ok_buckets)


def from_summary(record: dict[str, Any], run: Run) -> StageMetrics:
    """Figures of a stage imported from a k6 summary alone. Percentiles are k6's (of
    expected responses, which include 429 in loadproof's scripts); no interval is possible."""
    path = run.path / record["summary_file"]
    metrics = (read_json(path, what="k6 summary").get("metrics") or {})
    reqs = summary_values(metrics, "http_reqs{scenario:main}", "http_reqs")
    if not reqs or not reqs.get("count"):
        raise RunStoreError(f"{path}: no http_reqs in this summary", path=path)
    requests = int(reqs["count"])
    rate = float(reqs.get("rate") or 0)
    duration_s = requests / rate if rate else 0.0
    failed = summary_values(metrics, "http_req_failed{scenario:main}", "http_req_failed") or {}
    failed_share = float(failed.get("rate", failed.get("value", 0.0)) or 0.0)
    limited_values = summary_values(metrics, "rate_limited{scenario:main}", "rate_limited") or {}
    limited = int(limited_values.get("count") or 0)
    errors = int(round(failed_share * requests))
    successes = max(requests - errors - limited, 0)
    ok = summary_values(metrics, "http_req_duration{expected_response:true}") or {}
    every = summary_values(metrics, "http_req_duration{scenario:main}", "http_req_duration") or {}

    def latency(values: dict[str, Any], count: int) -> Latency:
        def get(name: str) -> float | None:
            value = values.get(name)
            return float(value) if value is not None else None

        return Latency(get("med"), get("p(90)"), get("p(95)"), get("p(99)"), get("max"), count)

    dropped = summary_values(metrics, "dropped_iterations{scenario:main}", "dropped_iterations")
    return StageMetrics(
        key=record["key"], index=int(record.get("index", 1)), level=record.get("level"),
        model=record.get("model"), repeats=[int(record.get("repeat", 1))], status="complete",
        requests=requests, successes=successes, rate_limited=limited, errors=errors,
        duration_s=duration_s, throughput_rps=rate or None,
        goodput_rps=successes / duration_s if duration_s else None,
        success_rate=successes / requests, rate_limited_share=limited / requests,
        error_share=errors / requests,
        dropped_iterations=int(dropped.get("count") or 0) if dropped else None,
        latency_ok=latency(ok, int(ok.get("count") or successes)),
        latency_all=latency(every, requests),
        summary_p95_ms=float(every["p(95)"]) if every.get("p(95)") is not None else None,
        summary_only=True, success_source="k6 summary (http_req_failed)",
        duration_source="k6 summary")


def stage_metrics(run: Run) -> list[StageMetrics]:
    """One StageMetrics per stage key, repeats pooled, each with its per-repeat figures."""
    summary_only = [s for s in run.stages if s.get("summary_only")]
    if summary_only:
        return [from_summary(record, run) for record in summary_only]
    if not run.requests_files():
        read_requests(run)  # raises, naming the run that has no request data
    records_by_key: dict[str, list[dict[str, Any]]] = {}
    for record in run.usable_stages():
        records_by_key.setdefault(record["key"], []).append(record)
    if not records_by_key:  # imported runs list their stage keys the same way
        raise RunStoreError(f"run {run.run_id} lists no stage with data", path=run.path)
    results = []
    for key, records in sorted(records_by_key.items(), key=lambda kv: kv[1][0].get("index", 0)):
        stage_frame = read_requests(run, key)  # one stage's rows at a time
        # one record: its columns are not needed again, so each goes once it is an array
        pooled = _build(key, records, stage_frame, run, consume=len(records) == 1)
        if len(records) > 1:  # the within-run bootstrap uses the pooled stage's blocks only
            pooled.per_repeat = [
                _build(key, [r], stage_frame.filter(pl.col("repeat") == int(r["repeat"])), run,
                       blocks=False, consume=True)
                for r in records]
        del stage_frame
        results.append(pooled)
    return results


def metrics_table(metrics: list[StageMetrics]) -> pl.DataFrame:
    """A flat table for display: one row per stage."""
    rows = []
    for m in metrics:
        rows.append({
            "stage": m.key, "level": m.level, "requests": m.requests,
            "throughput_rps": m.throughput_rps, "goodput_rps": m.goodput_rps,
            "success_rate": m.success_rate, "rate_limited_share": m.rate_limited_share,
            "error_share": m.error_share, "dropped_iterations": m.dropped_iterations,
            "p50_ms": m.latency_ok.p50_ms, "p95_ms": m.latency_ok.p95_ms,
            "p99_ms": m.latency_ok.p99_ms, "max_ms": m.latency_ok.max_ms,
            "p95_all_ms": m.latency_all.p95_ms, "status": m.status,
            "duration_s": m.duration_s, "duration_source": m.duration_source,
            "success_source": m.success_source,
        })
    return pl.DataFrame(rows)
