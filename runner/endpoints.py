"""Per-endpoint figures: each stage's requests split by their request name (the ``name``
column: k6's ``name`` tag, "POST /task", "GET /task/{id}"), before and after. Success and the
percentiles follow the stage figures' own rules (metrics.outcomes, nearest-rank percentiles of
successful answers); the verdict of an endpoint's p95 follows the comparison's rule for one
metric (Welch's t between repeats, a verdict only from 3 repeats per arm). These verdicts are
not corrected across endpoints and are never a headline claim: a table to read, not to quote."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from . import stats
from .compare import Comparison
from .metrics import outcomes
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


def _arm(frame: pl.DataFrame, min_successes: int) -> EndpointArm:
    ok, _, _ = outcomes(frame)
    durations = frame["duration_ms"].to_numpy().astype(np.float64, copy=False)
    ok_ms = durations[ok]
    enough = len(ok_ms) >= max(min_successes, 1)
    found = _nearest_ranks(ok_ms, tuple(q for _, q in PERCENTILES)) if enough else []
    values = {label: found[i] if enough else None for i, (label, _) in enumerate(PERCENTILES)}
    per_repeat = []
    repeats = frame["repeat"].to_numpy()
    for repeat in sorted(set(repeats.tolist())):
        mask = ok & (repeats == repeat)
        if mask.sum() >= max(min_successes, 1):
            (value,) = _nearest_ranks(durations[mask], (0.95,))
            if value:
                per_repeat.append(value)
    return EndpointArm(len(frame), int(ok.sum()), values["p50"], values["p95"], values["p99"],
                       per_repeat)


def _arms(run: Run, min_successes: int) -> dict[tuple[str, str], EndpointArm] | None:
    """Each (stage, request name)'s figures of one run (its rows split once, and dropped
    before the other run is read); None when the run has no request names or no rows."""
    files = list(dict.fromkeys(run.requests_files()))
    if not files or any("name" not in pl.read_parquet_schema(f) for f in files):
        return None
    frame = (pl.scan_parquet(files)
             .select("duration_ms", "status", "expected", "stage", "repeat", "name").collect())
    if frame.is_empty():
        return None
    parts = frame.filter(pl.col("name").is_not_null()).partition_by("stage", "name",
                                                                    as_dict=True)
    del frame
    return {(str(stage), str(name)): _arm(part, min_successes)
            for (stage, name), part in parts.items()}


def endpoint_rows(comparison: Comparison) -> list[EndpointRow]:
    """One row per compared stage and request name, in stage order then by name; empty when
    the runs carry no request names (imported from a format without them)."""
    least = comparison.capacity.slo.min_successes
    # each arm's figures per stage and name, aggregated where the rows are read
    groups = [_arms(comparison.baseline, least), _arms(comparison.candidate, least)]
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
