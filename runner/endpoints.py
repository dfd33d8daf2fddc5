"""Per-endpoint figures: each stage's requests split by their request name (the ``name``
column: k6's ``name`` tag, "POST /task", "GET /task/{id}"), before and after. Success and the
percentiles follow the stage figures' own rules (metrics.outcomes, nearest-rank percentiles of
successful answers); the verdict of an endpoint's p95 follows the comparison's rule for one
metric (Welch's t between repeats, a verdict only from 3 repeats per arm). These verdicts are
not corrected across endpoints and are never a headline claim: a table to read, not to quote."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from . import aggregate, stats
from .aggregate import success_expr
from .compare import Comparison
from .store import Run

PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


@dataclass
class EndpointArm:
    requests: int
    successes: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    p95_per_repeat: list[float]

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.requests if self.requests else None


@dataclass
class EndpointRow:
    stage: str
    level: int | None
    name: str
    baseline: EndpointArm | None
    candidate: EndpointArm | None
    p95_ratio: float | None  # above 1 favours the candidate
    p95_ci95: tuple[float, float] | None
    verdict: str


def _nearest_ranks(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """stats.percentile of each q as if ``values`` (not empty) were sorted, from one partial
    sort."""
    n = len(values)
    ranks = [min(max(math.ceil(n * q), 1) - 1, n - 1) for q in qs]
    placed = np.partition(values, sorted(set(ranks)))
    return [float(placed[r]) for r in ranks]


def _group_order(keys: np.ndarray, groups: int) -> np.ndarray:
    """The rows' order by group number (stable): a linear-time radix sort when the numbers fit
    in 16 bits, as they do for any realistic count of request names times repeats."""
    if groups <= np.iinfo(np.uint16).max:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


def _stage_arms(scan: pl.LazyFrame, min_successes: int) -> tuple[int, dict[str, EndpointArm]]:
    """(the rows read, each request name's figures) of one stage's rows (repeats pooled). The
    successful latencies are put in (name, repeat) order once; each repeat's p95 and each
    name's percentiles are then partial sorts of that copy's slices, in place."""
    rows = scan.select(pl.col("name").cast(pl.Categorical), "repeat", "duration_ms",
                       success_expr().fill_null(False).alias("ok"))
    # one read of the files for both: each name's requests, and the successful rows alone
    with aggregate.READS:
        counts, ok = pl.collect_all([
            rows.group_by("name").agg(pl.len().alias("requests")),
            rows.filter(pl.col("ok") & pl.col("name").is_not_null())
                .select("name", "repeat", "duration_ms")])
    read = int(counts["requests"].sum())
    counts = counts.filter(pl.col("name").is_not_null())
    if counts.is_empty():
        return read, {}
    # category codes and repeats as 0..k-1, through lookup tables
    dense = _lookup(counts["name"].to_physical().to_numpy())
    name_of = dict(enumerate(counts["name"].cast(pl.String).to_list()))
    requests = counts["requests"].to_numpy()
    repeat_values = np.sort(ok["repeat"].unique().to_numpy())
    per_name = max(len(repeat_values), 1)
    group = dense[ok["name"].to_physical().to_numpy()]
    group *= per_name
    group += _lookup(repeat_values)[ok["repeat"].to_numpy()]
    groups = len(name_of) * per_name
    latencies = ok["duration_ms"].to_numpy()
    del ok  # the names and repeats are in ``group`` now
    ordered = latencies[_group_order(group, groups)]
    del latencies
    edges = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=groups))])
    del group
    least = max(min_successes, 1)
    arms = {}
    for code, name in name_of.items():
        per_repeat = []
        for i in range(per_name):  # each repeat's slice first, while the name's is unsorted
            low, high = edges[code * per_name + i], edges[code * per_name + i + 1]
            if high - low >= least:
                (value,) = _nearest_ranks_in_place(ordered[low:high], (0.95,))
                if value:
                    per_repeat.append(value)
        low, high = edges[code * per_name], edges[(code + 1) * per_name]
        p50, p95, p99 = _nearest_ranks_in_place(ordered[low:high], tuple(
            q for _, q in PERCENTILES)) if high - low >= least else (None, None, None)
        arms[name] = EndpointArm(int(requests[code]), int(high - low), p50, p95, p99, per_repeat)
    return read, arms


def _lookup(values: np.ndarray) -> np.ndarray:
    """A table that maps each of ``values`` (distinct non-negative integers) to its index."""
    values = values.astype(np.int64)
    table = np.zeros(int(values.max()) + 1 if len(values) else 1, dtype=np.int32)
    table[values] = np.arange(len(values), dtype=np.int32)
    return table


def _nearest_ranks_in_place(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """As _nearest_ranks, reordering ``values`` (a slice of an array this module owns)
    instead of partitioning a copy."""
    n = len(values)
    ranks = [min(max(math.ceil(n * q), 1) - 1, n - 1) for q in qs]
    values.partition(sorted(set(ranks)))
    return [float(values[r]) for r in ranks]


def _arms(run: Run, keys: list[str], min_successes: int) \
        -> dict[tuple[str, str], EndpointArm] | None:
    """Each (stage, request name)'s figures of one run, one stage's rows read at a time (the
    stage filter pushed into the scan, names read as categories); None when the run has no
    request names."""
    files = list(dict.fromkeys(run.requests_files()))
    if not files or any("name" not in pl.read_parquet_schema(f) for f in files):
        return None
    found: dict[tuple[str, str], EndpointArm] = {}
    rows = 0
    for key in keys:
        stage_files = list(dict.fromkeys(run.path / r["requests_file"]
                                         for r in run.usable_stages()
                                         if r["key"] == key and r.get("requests_file")))
        if not stage_files:
            continue
        read, arms = _stage_arms(pl.scan_parquet(stage_files).filter(pl.col("stage") == key),
                                 min_successes)
        rows += read
        found.update({(key, name): arm for name, arm in arms.items()})
    return found if rows else None


def endpoint_rows(comparison: Comparison) -> list[EndpointRow]:
    """One row per compared stage and request name, in stage order then by name; empty when
    the runs carry no request names (imported from a format without them). Made once per
    comparison and kept on it (``loadproof report`` hands them to the notebook in
    comparison.json)."""
    if comparison.endpoints is None:
        comparison.endpoints = _rows(comparison)
    return list(comparison.endpoints)


def rows_to_json(rows: list[EndpointRow]) -> list[dict[str, object]]:
    return [asdict(row) for row in rows]


def rows_from_json(items: list[dict[str, Any]]) -> list[EndpointRow]:
    """The inverse of rows_to_json."""
    def arm(data: dict[str, Any] | None) -> EndpointArm | None:
        return EndpointArm(**data) if data is not None else None

    return [EndpointRow(**{**item, "baseline": arm(item["baseline"]),
                           "candidate": arm(item["candidate"]),
                           "p95_ci95": tuple(item["p95_ci95"]) if item["p95_ci95"] else None})
            for item in items]


def _rows(comparison: Comparison) -> list[EndpointRow]:
    least = comparison.capacity.slo.min_successes
    # each arm's figures per stage and name, aggregated where the rows are read
    keys = [stage.key for stage in comparison.stages]
    # the two runs side by side, one read at a time (aggregate.READS), as the report's chart
    # inputs (report.chart_inputs)
    with ThreadPoolExecutor(max_workers=2) as pool:
        groups = list(pool.map(lambda run: _arms(run, keys, least),
                               (comparison.baseline, comparison.candidate)))
    if groups[0] is None or groups[1] is None:
        return []
    rows = []
    for stage in comparison.stages:
        names = sorted({name for arm in groups if arm is not None for key, name in arm
                        if key == stage.key})
        for name in names:
            arms = [arm.get((stage.key, name)) if arm is not None else None
                    for arm in groups]
            base, cand = arms
            ratio, ci, verdict = None, None, "not comparable"
            if base and cand and base.p95_ms and cand.p95_ms:
                ratio = base.p95_ms / cand.p95_ms
                repeats = min(len(base.p95_per_repeat), len(cand.p95_per_repeat))
                if repeats >= stats.MIN_REPEATS_FOR_VERDICT:
                    ci = stats.welch_log_ratio(base.p95_per_repeat, cand.p95_per_repeat,
                                               True).ci95
                    verdict = stats.verdict(ci)
                else:
                    verdict = "not replicated"
            rows.append(EndpointRow(stage.key, stage.level, name, base, cand, ratio, ci,
                                    verdict))
    return rows
