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


def _frame(run: Run) -> pl.DataFrame:
    files = list(dict.fromkeys(run.requests_files()))
    if not files:
        return pl.DataFrame()
    columns = ["duration_ms", "status", "expected", "stage", "repeat", "name"]
    frames = []
    for path in files:
        available = pl.read_parquet_schema(path)
        if "name" not in available:
            return pl.DataFrame()
        frames.append(pl.read_parquet(path, columns=columns))
    return pl.concat(frames)


def _nearest_ranks(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """stats.percentile of each q as if ``values`` were sorted, from one partial sort."""
    n = len(values)
    ranks = [min(max(math.ceil(n * q), 1) - 1, n - 1) for q in qs]
    placed = np.partition(values, sorted(set(ranks)))
    return [float(placed[r]) for r in ranks]


def _arm(frame: pl.DataFrame, min_successes: int) -> EndpointArm:
    ok, _, _ = outcomes(frame)
    durations = frame["duration_ms"].to_numpy().astype(np.float64, copy=False)
    ok_ms = durations[ok]
    enough = len(ok_ms) >= min_successes and len(ok_ms) > 0
    found = _nearest_ranks(ok_ms, tuple(q for _, q in PERCENTILES)) if enough else []
    values = {label: found[i] if enough else None for i, (label, _) in enumerate(PERCENTILES)}
    per_repeat = []
    repeats = frame["repeat"].to_numpy()
    for repeat in sorted(set(repeats.tolist())):
        mask = ok & (repeats == repeat)
        if mask.sum() >= min_successes and mask.any():
            (value,) = _nearest_ranks(durations[mask], (0.95,))
            if value:
                per_repeat.append(value)
    return EndpointArm(len(frame), int(ok.sum()), values["p50"], values["p95"], values["p99"],
                       per_repeat)


def endpoint_rows(comparison: Comparison) -> list[EndpointRow]:
    """One row per compared stage and request name, in stage order then by name; empty when
    the runs carry no request names (imported from a format without them)."""
    least = comparison.capacity.slo.min_successes
    frames = (_frame(comparison.baseline), _frame(comparison.candidate))
    if any(f.is_empty() for f in frames):
        return []
    rows = []
    # each arm split once by stage and name (not filtered again for every pair)
    groups = [f.partition_by("stage", "name", as_dict=True) for f in frames]
    for stage in comparison.stages:
        names = sorted({name for arm in groups for key, name in arm
                        if key == stage.key and name is not None})
        for name in names:
            found = [arm.get((stage.key, name)) for arm in groups]
            arms = [_arm(part, least) if part is not None and part.height else None
                    for part in found]
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
