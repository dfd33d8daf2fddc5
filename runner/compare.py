"""Comparing two runs stage by stage: improvement ratios (above 1 is always better) with 95%
intervals from the spread between repeats, verdicts, capacity under an SLO, and the claim
guards that keep a misleading figure out of a report. What is claimed is decided here, once;
every output only renders it."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import stats
from .errors import ComparisonError
from .metrics import StageMetrics, stage_metrics
from .store import Run

DEFAULT_SLO_P95_MS = 400.0
DEFAULT_SLO_SUCCESS = 0.99
DEFAULT_MIN_SUCCESSES = 30


@dataclass(frozen=True)
class MetricSpec:
    name: str
    label: str
    unit: str
    lower_is_better: bool
    latency: bool = False


METRICS = (
    MetricSpec("latency_p50_ms", "p50 latency", "ms", True, latency=True),
    MetricSpec("latency_p95_ms", "p95 latency", "ms", True, latency=True),
    MetricSpec("latency_p99_ms", "p99 latency", "ms", True, latency=True),
    MetricSpec("throughput_rps", "throughput", "req/s", False),
    MetricSpec("goodput_rps", "goodput (successes/s)", "req/s", False),
    MetricSpec("success_rate", "success rate", "share", False),
)
METRIC_BY_NAME = {m.name: m for m in METRICS}
_QUANTILE = {"latency_p50_ms": 0.50, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}
# the metrics a headline, title or summary may claim; corrected together (Holm)
CLAIM_METRICS = ("latency_p95_ms", "goodput_rps", "success_rate")


@dataclass
class Slo:
    p95_ms: float = DEFAULT_SLO_P95_MS
    success: float = DEFAULT_SLO_SUCCESS
    min_successes: int = DEFAULT_MIN_SUCCESSES

    def check(self, m: StageMetrics) -> tuple[bool, str]:
        if m.successes < self.min_successes:
            return False, f"{m.successes} successful requests (< {self.min_successes})"
        p95 = m.latency_ok.p95_ms
        rate = m.success_rate or 0.0
        if p95 is None or p95 > self.p95_ms:
            return False, f"p95 {p95:.1f} ms > {self.p95_ms:g} ms" if p95 is not None \
                else "no latency"
        if rate < self.success:
            return False, f"success {rate:.2%} < {self.success:.0%}"
        return True, f"p95 {p95:.1f} ms, success {rate:.2%}"


@dataclass
class MetricComparison:
    metric: str
    label: str
    unit: str
    lower_is_better: bool
    baseline: float | None  # the arm's value: geometric mean of its per-repeat estimates
    candidate: float | None
    ratio: float | None
    ci95: tuple[float, float] | None
    verdict: str
    reasons: list[str] = field(default_factory=list)
    p_value: float | None = None
    interval: str | None = None  # "between repeats" or "within this run only"
    repeats: tuple[int, int] = (1, 1)
    # the verdict as a headline claim, after Holm's correction across the claim family
    # (CLAIM_METRICS at every stage); None for metrics outside the family
    claim: str | None = None
    p_holm: float | None = None
    # latency percentiles: each arm's own value with its 95% interval (between its repeats, or
    # within its run), so a chart of the arms' points draws what the table shows
    baseline_ci95: tuple[float, float] | None = None
    candidate_ci95: tuple[float, float] | None = None


@dataclass
class Distribution:
    """The distribution guard's figures at one stage: the mean latency of successful answers
    (ratio above 1 favours the candidate, with its 95% interval) and, when the p95 improved
    while the mean did not move and the median got worse, the verdict that the tail was
    reshaped rather than the service made faster (Little's law: an unchanged mean at an
    unchanged throughput means requests wait as long on average as before)."""

    mean_baseline_ms: float | None
    mean_candidate_ms: float | None
    mean_ratio: float | None
    mean_ci95: tuple[float, float] | None
    interval: str | None
    verdict: str | None = None  # RESHAPED, or None
    text: str | None = None


RESHAPED = "tail reshaped, not faster"


@dataclass
class StageComparison:
    key: str
    index: int
    level: int | None
    baseline: StageMetrics
    candidate: StageMetrics
    metrics: dict[str, MetricComparison]
    guards: list[str] = field(default_factory=list)
    # why no claim may come from this stage (load not delivered, arms overlapped, disturbed)
    withheld: list[str] = field(default_factory=list)
    # the mean latency beside the percentiles, and whether the tail was only reshaped
    distribution: Distribution | None = None


@dataclass
class ArmCapacity:
    """The highest level that this arm and every lower level met the SLO at (in every repeat),
    and the lowest level it missed in every repeat: capacity lies in [level, upper)."""

    level: int | None
    bound: str  # "exact" (a higher level was missed), "at_least" (none was), "none"
    checks: dict[str, str]
    knee_level: int | None = None
    knee_reason: str | None = None
    upper: int | None = None

    def shown(self, unit: str = "") -> str:
        """The level as reports print it: "≥150" when no level was missed, "100–<150"."""
        if self.level is None:
            return f"<{self.upper}{unit}" if self.upper is not None else "none"
        if self.upper is None:
            return f"≥{self.level}{unit}"
        return f"{self.level}–<{self.upper}{unit}"


@dataclass
class Capacity:
    slo: Slo
    model: str | None
    baseline: ArmCapacity
    candidate: ArmCapacity
    ratio: float | None  # candidate level / baseline level (the grid's lower bounds)
    ratio_bound: str | None  # "exact", "at_least" or "at_most"
    reason: str | None
    # the ratio's range from the grid: capacity lies in [level, upper) for each arm
    ratio_low: float | None = None
    ratio_high: float | None = None  # None: not bounded by the plan
    verdict: str = "not comparable"
    basis: str = "grid"  # "grid" (a stage plan's levels) or "search" (capacity-search brackets)

    def ratio_text(self) -> str:
        """The ratio as its range on the grid ("1.50x–3.00x", "≥2.00x", "<0.67x"), never the
        ratio of the two lower bounds alone; or why there is no ratio."""
        if self.ratio is None:
            return f"no ratio: {self.reason}"
        low, high = self.ratio_low or 0.0, self.ratio_high
        if high is None:
            return f"≥{low:.2f}x" if low > 0 else "any ratio (the grid bounds neither arm)"
        if low <= 0:
            return f"<{high:.2f}x"
        return f"{low:.2f}x–{high:.2f}x"

    def claimed_bound(self) -> tuple[float | None, str | None]:
        """The figure a claim may state: the lower bound of a gain, the upper bound of a loss."""
        if self.verdict == "improved":
            return self.ratio_low, "at_least"
        if self.verdict == "regressed":
            return self.ratio_high, "at_most"
        return self.ratio, None

    def range_text(self) -> str:
        """The grid's range of the ratio: "[1.00x, 3.00x)" or "[1.00x, ∞)"."""
        if self.ratio is None:
            return ""
        low = f"{self.ratio_low:.2f}x" if self.ratio_low is not None else "0x"
        high = f"{self.ratio_high:.2f}x" if self.ratio_high is not None else "∞"
        where = "on this grid" if self.basis == "grid" else "from the searches' brackets"
        return f"between {low} and {high} {where}"


@dataclass
class Comparison:
    comparison_id: str
    baseline: Run
    candidate: Run
    baseline_metrics: list[StageMetrics]
    candidate_metrics: list[StageMetrics]
    stages: list[StageComparison]
    capacity: Capacity
    headline_stage: str | None
    guards: list[str]
    warnings: list[str]
    claim_family: int = 0  # how many comparisons the claims were corrected across (Holm)
    resilience: dict[str, Any] | None = None  # faulted stages (runner/resilience.py)
    # per-endpoint rows, made on first use (runner/endpoints.py); not part of to_dict
    endpoints: list[Any] | None = field(default=None, repr=False, compare=False)

    def stage(self, key: str) -> StageComparison:
        for stage in self.stages:
            if stage.key == key:
                return stage
        raise KeyError(key)

    @property
    def headline(self) -> StageComparison | None:
        return self.stage(self.headline_stage) if self.headline_stage else None

    def regressions(self) -> list[tuple[StageComparison, MetricComparison]]:
        """Every claimed significant worsening, at any stage."""
        return [(s, m) for s in self.stages for m in s.metrics.values()
                if m.claim == "regressed"]

    def to_dict(self) -> dict[str, Any]:
        def arm(run: Run, metrics: list[StageMetrics]) -> dict[str, Any]:
            return {"run_id": run.run_id, "label": run.label, "path": str(run.path),
                    "status": run.status, "profile": (run.manifest.get("profile") or {}).get("name"),
                    "k6_version": (run.manifest.get("k6") or {}).get("version"),
                    "stages": [m.to_dict() for m in metrics]}

        return {
            "comparison_id": self.comparison_id,
            "baseline": arm(self.baseline, self.baseline_metrics),
            "candidate": arm(self.candidate, self.candidate_metrics),
            "stages": [{"key": s.key, "index": s.index, "level": s.level, "guards": s.guards,
                        "withheld": s.withheld,
                        "distribution": asdict(s.distribution) if s.distribution else None,
                        "metrics": {k: asdict(v) for k, v in s.metrics.items()}}
                       for s in self.stages],
            "capacity": asdict(self.capacity),
            "headline_stage": self.headline_stage,
            "claim_family": self.claim_family,
            "guards": self.guards,
            "warnings": self.warnings,
            "resilience": self.resilience,
        }


def comparison_id(baseline: Run, candidate: Run) -> str:
    digest = hashlib.sha256(f"{baseline.run_id}|{candidate.run_id}".encode()).hexdigest()
    return f"cmp-{digest[:16]}"


def _value(m: StageMetrics, metric: str) -> float | None:
    if metric in _QUANTILE:
        value: float | None = getattr(m.latency_ok, metric.removeprefix("latency_"))
        return value
    result: float | None = getattr(m, metric)
    return result


def _parts(m: StageMetrics) -> list[StageMetrics]:
    return m.per_repeat or [m]


_BLOCK_METRIC = {"latency_p50_ms": "q0.5", "latency_p95_ms": "q0.95", "latency_p99_ms": "q0.99",
                 "throughput_rps": "throughput", "goodput_rps": "goodput",
                 "success_rate": "success"}


def _sampling_floor(metric: str, parts: list[StageMetrics]) -> float:
    """The variance one repeat's log estimate has from its own sampling noise alone (binomial
    for shares, Poisson for counts per second): the repeats' spread is never taken as smaller."""
    if metric == "success_rate":
        return float(np.mean([stats.log_share_variance(p.successes, p.requests) for p in parts]))
    if metric in ("throughput_rps", "goodput_rps"):
        counts = [p.requests if metric == "throughput_rps" else p.successes for p in parts]
        return float(np.mean([1.0 / c if c > 0 else np.inf for c in counts]))
    return 0.0


def _not_comparable(spec: MetricSpec, b: float | None, c: float | None, reasons: list[str],
                    repeats: tuple[int, int]) -> MetricComparison:
    return MetricComparison(spec.name, spec.label, spec.unit, spec.lower_is_better, b, c, None,
                            None, "not comparable", reasons, repeats=repeats)


def compare_metric(spec: MetricSpec, base: StageMetrics, cand: StageMetrics,
                   rng: np.random.Generator, min_successes: int) -> MetricComparison:
    """One metric at one stage: per-repeat estimates, their ratio and interval, a verdict only
    with at least MIN_REPEATS_FOR_VERDICT repeats per arm."""
    reasons: list[str] = []
    base_parts, cand_parts = _parts(base), _parts(cand)
    repeats = (len(base_parts), len(cand_parts))
    if spec.latency:
        for arm, m in (("baseline", base), ("candidate", cand)):
            if m.requests == 0:
                reasons.append(f"{arm} has no requests at {m.key}: no latency figure")
            elif m.successes < min_successes:
                what = "no successful requests" if m.successes == 0 \
                    else f"only {m.successes} successful requests"
                reasons.append(f"{arm} has {what} at {m.key} (minimum {min_successes}): "
                               "no latency figure")
        if reasons:
            return _not_comparable(spec, None if base.successes < min_successes
                                   else _value(base, spec.name),
                                   None if cand.successes < min_successes
                                   else _value(cand, spec.name), reasons, repeats)
    b_values = [_value(p, spec.name) for p in base_parts]
    c_values = [_value(p, spec.name) for p in cand_parts]
    if any(v is None for v in b_values + c_values):
        return _not_comparable(spec, _value(base, spec.name), _value(cand, spec.name),
                               ["a repeat has no value for this metric (no successful "
                                "requests, or no measured window)"], repeats)
    b = stats.geometric_mean([float(v) for v in b_values if v is not None])
    c = stats.geometric_mean([float(v) for v in c_values if v is not None])
    if b is None or c is None:
        return _not_comparable(spec, _value(base, spec.name), _value(cand, spec.name),
                               ["a repeat's value is zero while another's is not: no ratio of "
                                "per-repeat estimates exists"], repeats)
    ratio, why = stats.improvement_ratio(b, c, spec.lower_is_better)
    if ratio is None or ratio == 0:
        return _not_comparable(spec, b, c, [why or "a value is zero, so no ratio exists"],
                               repeats)
    if base.summary_only or cand.summary_only:
        reasons.append("no interval: an arm was imported from a k6 summary alone, without "
                       "per-request timings, so the ratio cannot be called significant")
        return MetricComparison(spec.name, spec.label, spec.unit, spec.lower_is_better, b, c,
                                ratio, None, "no interval", reasons, repeats=repeats)
    if min(repeats) >= 2:
        floors = (_sampling_floor(spec.name, base_parts), _sampling_floor(spec.name, cand_parts))
        estimate = stats.welch_log_ratio([float(v) for v in b_values if v is not None],
                                         [float(v) for v in c_values if v is not None],
                                         spec.lower_is_better, base_floor_var=floors[0],
                                         cand_floor_var=floors[1])
        interval = "between repeats"
    elif base.blocks is not None and cand.blocks is not None:
        estimate = stats.block_bootstrap_ratio(base.blocks, cand.blocks, _BLOCK_METRIC[spec.name],
                                               spec.lower_is_better, ratio, rng)
        interval = "within this run only"
    else:
        estimate = stats.RatioEstimate(ratio, None, None, None, "none")
        interval = None
    ci = estimate.ci95
    if min(repeats) < stats.MIN_REPEATS_FOR_VERDICT:
        result = "not replicated"
        reasons.append(f"{min(repeats)} repeat(s) in an arm: a measurement, not a verdict "
                       f"(run at least {stats.MIN_REPEATS_FOR_VERDICT} repeats per arm, e.g. "
                       f"--repeat {stats.MIN_REPEATS_FOR_VERDICT})"
                       + ("; the interval covers variation within these runs only, not "
                          "run-to-run variation" if interval == "within this run only" else ""))
    elif ci is None:
        result = "not comparable"
        reasons.append("the repeats agree exactly, so there is no spread to test with")
    else:
        result = stats.verdict(ci)
        if result == "no significant change":
            reasons.append(f"the 95% interval [{ci[0]:.2f}, {ci[1]:.2f}] spans 1")
    return MetricComparison(spec.name, spec.label, spec.unit, spec.lower_is_better, b, c,
                            ratio, ci, result, reasons, p_value=estimate.p_value,
                            interval=interval, repeats=repeats)


_GAINS_THAT_NEED_SUCCESS = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                            "throughput_rps", "goodput_rps")


def _apply_tradeoff_guard(stage: StageComparison) -> None:
    """A latency or throughput gain while the candidate's success rate fell is a trade-off
    (failing fast is quick, and sheds load)."""
    success = stage.metrics["success_rate"]
    b, c = success.baseline, success.candidate
    # a material fall: half a percentage point, whatever its significance
    fell = b is not None and c is not None and c < b - 0.005
    if not fell:
        return
    assert b is not None and c is not None
    gained = False
    for name in _GAINS_THAT_NEED_SUCCESS:
        metric = stage.metrics[name]
        if metric.ratio is not None and metric.ratio > 1:
            gained = True
            if metric.verdict == "improved":
                metric.verdict = "trade-off"
            metric.reasons.append(f"{metric.label} looks better but the success rate fell, from "
                                  f"{b:.1%} to {c:.1%}: a trade-off, not an improvement")
    if gained:
        stage.guards.append(f"success rate fell from {b:.1%} to {c:.1%}; latency and throughput "
                            f"gains at {stage.key} are reported as a trade-off")


def _mean_ms(m: StageMetrics) -> float | None:
    """The mean latency of successful answers (computed with the stage's figures)."""
    return m.mean_ok_ms


def _mean_rng(index: int) -> np.random.Generator:
    return np.random.default_rng(20250807 + index)


def _draws_ahead(base: StageMetrics, cand: StageMetrics,
                 rng: np.random.Generator) -> stats.DrawnAhead:
    """The block weights a stage's within-run intervals will draw (a pair per metric from
    ``rng``, then the mean's pair from its own generator), drawn ahead in a second thread:
    the same draws, sooner."""
    if min(len(_parts(base)), len(_parts(cand))) >= 2 or base.blocks is None \
            or cand.blocks is None or min(base.blocks.count, cand.blocks.count) < stats.MIN_BLOCKS:
        return stats.DrawnAhead([])
    pair = [base.blocks.count, cand.blocks.count]
    return stats.DrawnAhead([(rng, pair * len(METRICS)), (_mean_rng(base.index), pair)])


def _mean_comparison(stage: StageComparison, min_successes: int) -> Distribution:
    """The mean latency of successful answers in both arms, its ratio and 95% interval (between
    repeats with two or more per arm, else from the runs' 1-second blocks). Its own random
    generator: the other metrics' intervals do not move because this one is computed."""
    base, cand = stage.baseline, stage.candidate
    b, c = _mean_ms(base), _mean_ms(cand)
    if b is None or c is None or b <= 0 or c <= 0 or min(base.successes, cand.successes) \
            < min_successes:
        return Distribution(b, c, None, None, None)
    ratio = b / c
    rng = _mean_rng(stage.index)
    b_parts, c_parts = _parts(base), _parts(cand)
    b_means = [_mean_ms(p) for p in b_parts]
    c_means = [_mean_ms(p) for p in c_parts]
    estimate: stats.RatioEstimate | None = None
    interval = None
    if min(len(b_parts), len(c_parts)) >= 2 and all(v for v in b_means + c_means):
        estimate = stats.welch_log_ratio([float(v) for v in b_means if v],
                                         [float(v) for v in c_means if v], True)
        interval = "between repeats"
    elif base.blocks is not None and cand.blocks is not None:
        estimate = stats.block_bootstrap_ratio(base.blocks, cand.blocks, "mean", True, ratio,
                                               rng)
        interval = "within this run only"
    ci = estimate.ci95 if estimate is not None else None
    return Distribution(b, c, ratio, ci, interval if ci else None)


def apply_distribution_guard(stage: StageComparison, min_successes: int) -> None:
    """A p95 that improved (its interval above 1) while the mean latency stayed put (its
    interval spans 1) and the median got worse (its interval below 1): the tail was reshaped,
    the service was not made faster. Said in the stage's guards, and
    kept in ``stage.distribution`` for every headline and talking point."""
    dist = _mean_comparison(stage, min_successes)
    stage.distribution = dist
    p95, p50 = stage.metrics["latency_p95_ms"], stage.metrics["latency_p50_ms"]
    tail_better = p95.ratio is not None and p95.ci95 is not None and p95.ci95[0] > 1
    median_worse = p50.ratio is not None and p50.ci95 is not None and p50.ci95[1] < 1
    mean_same = dist.mean_ci95 is not None and dist.mean_ci95[0] <= 1 <= dist.mean_ci95[1]
    if not (tail_better and median_worse and mean_same):
        return
    assert dist.mean_baseline_ms is not None and dist.mean_candidate_ms is not None
    assert p50.baseline is not None and p50.candidate is not None
    assert p95.baseline is not None and p95.candidate is not None
    dist.verdict = RESHAPED
    dist.text = (f"{RESHAPED}: p95 fell from {p95.baseline:.1f} to {p95.candidate:.1f} ms, but "
                 f"the mean went from {dist.mean_baseline_ms:.1f} to "
                 f"{dist.mean_candidate_ms:.1f} ms (no change beyond its 95% interval) and the "
                 f"median rose from {p50.baseline:.1f} to {p50.candidate:.1f} ms: the slowest "
                 "requests were made faster at the expense of the typical one")
    stage.guards.append(dist.text)


def _arm_intervals(stage: StageComparison) -> None:
    """Each arm's 95% interval of its own latency percentiles, around the value the table
    shows: the geometric mean of its repeats, t on their logs, with two or more repeats. One
    run gets none: resampling its few 1-second blocks covers variation within that run only,
    and with 8 blocks covered the true p95 in only 80-85% of simulated runs."""
    for name in _QUANTILE:
        metric = stage.metrics[name]
        for side, m in (("baseline", stage.baseline), ("candidate", stage.candidate)):
            if getattr(metric, side) is None:
                continue
            values = [_value(p, name) for p in _parts(m)]
            ci = None
            if len(values) >= 2 and all(v is not None for v in values):
                ci = stats.repeats_interval([float(v) for v in values if v is not None])
            setattr(metric, f"{side}_ci95", ci)


def delivery_problem(m: StageMetrics) -> str | None:
    """Why the planned load was not delivered (the generator fell behind, or the target could
    not take the arrivals): more than 1% of planned iterations dropped, or, in the open model,
    an achieved request rate under 95% of the planned rate."""
    for part in _parts(m):
        if part.model != "rate" or not part.level or part.duration_s <= 0:
            if part.dropped_iterations and part.dropped_iterations > 0.01 * max(part.requests, 1):
                return (f"{part.dropped_iterations} dropped iterations (over 1% of "
                        f"{part.requests} requests)")
            continue
        planned = part.level * part.duration_s
        repeat = f" in repeat {part.repeats[0]}" if len(_parts(m)) > 1 else ""
        if part.dropped_iterations and part.dropped_iterations > 0.01 * planned:
            return (f"{part.dropped_iterations} dropped iterations{repeat} "
                    f"({part.dropped_iterations / planned:.1%} of {planned:.0f} planned)")
        if part.throughput_rps is not None and part.throughput_rps < 0.95 * part.level:
            return (f"achieved {part.throughput_rps:.0f} req/s{repeat} of the {part.level} "
                    "req/s planned")
    return None


_WITHHELD_VERDICTS = {"improved", "regressed", "trade-off", "no significant change",
                      "not replicated"}


def _withhold(stage: StageComparison, word: str, reason: str) -> None:
    """No claim comes from this stage: its verdicts become ``word``, with the reason."""
    stage.withheld.append(reason)
    stage.guards.append(f"{word}: {reason}; no claim is made from this stage")
    for metric in stage.metrics.values():
        if metric.verdict in _WITHHELD_VERDICTS:
            metric.verdict = word
            metric.reasons.append(reason)


def _window(record: dict[str, Any]) -> tuple[dt.datetime, dt.datetime] | None:
    try:
        return (dt.datetime.fromisoformat(record["started_at"]),
                dt.datetime.fromisoformat(record["ended_at"]))
    except (KeyError, TypeError, ValueError):
        return None


def _overlaps(base: StageMetrics, cand: StageMetrics, baseline: Run, candidate: Run) \
        -> str | None:
    """This stage of either arm was measured while any stage of the other arm ran, on the same
    host: neither arm was measured alone."""
    base_host = (baseline.manifest.get("machine_info") or {}).get("node")
    cand_host = (candidate.manifest.get("machine_info") or {}).get("node")
    if not base_host or base_host != cand_host:
        return None
    for arm, mine, other, other_arm in (("baseline", base, candidate, "candidate"),
                                        ("candidate", cand, baseline, "baseline")):
        windows = [(r, w) for r in other.usable_stages() if (w := _window(r)) is not None]
        for record in mine.records:
            window = _window(record)
            if window is None:
                continue
            for other_record, (start, end) in windows:
                if start < window[1] and window[0] < end:
                    return (f"the arms' measured windows overlap on host {base_host} ({arm} "
                            f"{record.get('dir', mine.key)} {window[0]:%H:%M:%S}–"
                            f"{window[1]:%H:%M:%S}, {other_arm} {other_record.get('dir')} "
                            f"{start:%H:%M:%S}–{end:%H:%M:%S}): neither was measured alone")
    return None


def _generator_limited(m: StageMetrics, arm: str) -> str | None:
    """The load generator (or the machine), not the target, limited this stage."""
    for record in m.records:
        generator = record.get("generator") or {}
        if generator.get("limited"):
            return (f"load generator saturated in {arm} {record.get('dir', m.key)}: "
                    + "; ".join(generator.get("reasons") or []))
    return None


def _disturbed(m: StageMetrics, arm: str) -> str | None:
    """Other processes took material CPU while this stage was measured."""
    for record in m.records:
        conditions = record.get("conditions") or {}
        if conditions.get("disturbed"):
            return (f"{arm} {record.get('dir', m.key)}: other processes used "
                    f"{conditions.get('other_cpu_cores', 0):.2f} cores while it was measured")
    return None


def _faulted(m: StageMetrics, arm: str) -> str | None:
    """A fault was planned in this stage: its figures are a resilience scenario, not calm
    weather, so they decide no capacity and no headline."""
    for record in m.records:
        if record.get("fault"):
            return f"{arm} {record.get('dir', m.key)} had fault {record['fault']['name']}"
    return None


def apply_claim_family(stages: list[StageComparison]) -> int:
    """Holm's correction across every claimable comparison (CLAIM_METRICS × stages): a claim,
    in a headline, title or summary, survives only with its family-wise adjusted p < 0.05."""
    family = [m for s in stages if not s.withheld for name, m in s.metrics.items()
              if name in CLAIM_METRICS and m.p_value is not None
              and min(m.repeats) >= stats.MIN_REPEATS_FOR_VERDICT]
    adjusted = stats.holm([m.p_value for m in family])
    for metric, p_holm in zip(family, adjusted, strict=True):
        metric.p_holm = p_holm
        significant = p_holm is not None and p_holm < stats.ALPHA
        if metric.verdict in ("improved", "regressed", "trade-off") and significant:
            metric.claim = metric.verdict
        elif metric.verdict in ("improved", "regressed", "trade-off"):
            metric.claim = "no significant change"
            metric.reasons.append(
                f"significant alone (p = {metric.p_value:.3f}) but not after Holm's correction "
                f"across the {len(family)} claimable comparisons (adjusted p = {p_holm:.3f})")
        else:
            metric.claim = metric.verdict
    for stage in stages:
        for name, metric in stage.metrics.items():
            if name in CLAIM_METRICS and metric.claim is None:
                metric.claim = metric.verdict
    return len(family)


def _level_status(m: StageMetrics, slo: Slo) -> tuple[str, str]:
    """"meets" (every repeat met the SLO), "misses" (every repeat missed it, with the load
    delivered) or "mixed", with the reason."""
    faulted = _faulted(m, "the arm")
    if faulted is not None:
        return "faulted", f"skipped: {faulted} (see the resilience figures)"
    problem = delivery_problem(m)
    results = [slo.check(part) for part in _parts(m)]
    met = [ok for ok, _ in results]
    pooled_ok, pooled_why = slo.check(m)
    unfair = _generator_limited(m, "the arm") or _disturbed(m, "the arm")
    if unfair is not None:
        return "mixed", f"not measured fairly ({unfair}); {pooled_why}"
    if problem is not None:
        if not any(met):  # fewer arrivals than planned, and still the SLO failed
            return "misses", f"load not delivered ({problem}) and {pooled_why}"
        return "mixed", f"load not delivered ({problem}); {pooled_why}"
    if all(met):
        return "meets", pooled_why
    if not any(met):
        return "misses", pooled_why
    return "mixed", (f"met the SLO in {sum(met)} of {len(met)} repeats; "
                     + "; ".join(why for ok, why in results if not ok))


def arm_capacity(metrics: list[StageMetrics], slo: Slo) -> ArmCapacity:
    """Capacity lies in [level, upper): level is the highest level that it and every lower
    level met the SLO at, upper the lowest level missed in every repeat."""
    checks = {}
    level: int | None = None
    upper: int | None = None
    blocked = False
    for m in sorted(metrics, key=lambda m: m.level or 0):
        status, why = _level_status(m, slo)
        checks[m.key] = {"meets": "meets SLO: ", "misses": "misses SLO: ",
                         "mixed": "undecided: ", "faulted": ""}[status] + why
        if m.level is None or status == "faulted":
            continue
        if status == "meets" and not blocked:
            level = m.level
        else:
            blocked = True
        if status == "misses" and upper is None:
            upper = m.level
    bound = "none" if level is None else ("at_least" if upper is None else "exact")
    knee_level, knee_reason = find_knee(metrics)
    return ArmCapacity(level, bound, checks, knee_level, knee_reason, upper)


def find_knee(metrics: list[StageMetrics]) -> tuple[int | None, str | None]:
    """Open model: the first level where p95 more than doubles over the lightest stage's (and
    rises by at least 10 ms, so jitter on a few-ms floor is no knee), or more than 1% of the
    planned iterations were dropped."""
    if not metrics or metrics[0].model != "rate":
        return None, None
    ordered = sorted(metrics, key=lambda m: m.level or 0)
    floor = ordered[0].latency_ok.p95_ms
    for m in ordered:
        planned = (m.level or 0) * m.duration_s
        if m.dropped_iterations and planned and m.dropped_iterations > 0.01 * planned:
            return m.level, f"{m.dropped_iterations} dropped iterations at {m.level} req/s"
        p95 = m.latency_ok.p95_ms
        if floor and p95 is not None and p95 > 2 * floor and p95 - floor >= 10:
            return m.level, f"p95 {p95:.1f} ms, over twice the {floor:.1f} ms of the lightest stage"
    return None, "no knee within the tested levels"


def compare_capacity(base: list[StageMetrics], cand: list[StageMetrics], slo: Slo,
                     same_model: bool) -> Capacity:
    b, c = arm_capacity(base, slo), arm_capacity(cand, slo)
    model = base[0].model if base else None
    capacity = Capacity(slo, model, b, c, None, None, None)
    if not same_model:
        capacity.reason = "the arms used different load models: no capacity ratio"
        return capacity
    if not any(m.level is not None for m in base + cand):
        capacity.reason = ("the stages have no load level (imported without loadproof's stage "
                           "tags): no capacity")
        return capacity
    if b.level is None:
        capacity.reason = ("the baseline held no level that decides capacity (each missed the "
                           "SLO, or was not measured fairly): no capacity ratio")
        return capacity
    if c.level is None:
        capacity.reason = ("the candidate held no level that decides capacity (each missed the "
                           "SLO, or was not measured fairly)")
        capacity.ratio, capacity.ratio_bound = 0.0, "exact"
        capacity.ratio_low = 0.0
        capacity.ratio_high = c.upper / b.level if c.upper is not None else None
    elif b.upper is None and c.upper is None:
        capacity.reason = ("both arms met the SLO at every stage, so their capacities are "
                           "beyond the plan: no capacity ratio (add higher stages, or run "
                           "`loadproof capacity`)")
        return capacity
    else:
        capacity.ratio = c.level / b.level
        # each arm's capacity lies in [level, upper): the ratio's range on this grid
        capacity.ratio_low = c.level / b.upper if b.upper is not None else 0.0
        capacity.ratio_high = c.upper / b.level if c.upper is not None else None
        if b.upper is None:
            capacity.ratio_bound = "at_most"
        elif c.upper is None:
            capacity.ratio_bound = "at_least"
        else:
            capacity.ratio_bound = "exact"
    repeats = min((len(_parts(m)) for m in base + cand), default=0)
    capacity.verdict = ("not replicated" if repeats < stats.MIN_REPEATS_FOR_VERDICT
                        else range_verdict(capacity))
    return capacity


def range_verdict(capacity: Capacity) -> str:
    """Improved or regressed only when the ratio's whole range lies above or below 1."""
    ratio = capacity.ratio if capacity.ratio is not None else 1.0
    if capacity.ratio_low is not None and capacity.ratio_low >= 1 and ratio > 1:
        return "improved"
    if capacity.ratio_high is not None and capacity.ratio_high <= 1 and ratio < 1:
        return "regressed"
    return "no significant change"


def compare_stages(base_metrics: list[StageMetrics], cand_metrics: list[StageMetrics], slo: Slo,
                   rng: np.random.Generator, guards: list[str] | None = None, *,
                   overlap: Callable[[StageMetrics, StageMetrics], str | None] | None = None) \
        -> list[StageComparison]:
    """Every stage present in both arms: its metrics, guards and withheld claims (the claim
    family's correction is applied by the caller, across all stages)."""
    guards = guards if guards is not None else []
    stages = []
    cand_by_key = {m.key: m for m in cand_metrics}
    for base in base_metrics:
        cand = cand_by_key.get(base.key)
        if cand is None:
            guards.append(f"stage {base.key} is missing from the candidate: not compared")
            continue
        with _draws_ahead(base, cand, rng):
            metrics = {spec.name: compare_metric(spec, base, cand, rng, slo.min_successes)
                       for spec in METRICS}
            stage = StageComparison(base.key, base.index, base.level, base, cand, metrics)
            for metric in metrics.values():
                if metric.verdict == "not comparable":
                    stage.guards.extend(r for r in metric.reasons if r not in stage.guards)
            _apply_tradeoff_guard(stage)
            apply_distribution_guard(stage, slo.min_successes)
        _arm_intervals(stage)
        for arm, m in (("baseline", base), ("candidate", cand)):
            problem = delivery_problem(m)
            if problem is not None:
                _withhold(stage, "load not delivered", f"{arm}: {problem}")
            disturbed = _disturbed(m, arm)
            if disturbed is not None:
                _withhold(stage, "disturbed", disturbed)
            limited = _generator_limited(m, arm)
            if limited is not None:
                _withhold(stage, "load generator limited", limited)
            faulted = _faulted(m, arm)
            if faulted is not None:  # the resilience section makes its claims
                _withhold(stage, "fault injected", faulted)
        overlapped = overlap(base, cand) if overlap is not None else None
        if overlapped is not None:
            _withhold(stage, "arms overlapped", overlapped)
        stages.append(stage)
    return stages


def headline_claims(stages: list[StageComparison]) -> list[tuple[str, str, str]]:
    """(stage, metric, claim) for every claim a headline, title or summary would make."""
    return [(s.key, name, m.claim) for s in stages for name, m in s.metrics.items()
            if m.claim in ("improved", "regressed", "trade-off")]


def _confirm_capacity(capacity: Capacity, stages: list[StageComparison]) -> None:
    """A capacity verdict from the grid stands only when the level that decides it shows the
    difference as a claim (p95 or success rate, after Holm's correction): a level where one
    arm's repeats all just met the SLO and the other's all just missed it is no evidence."""
    if capacity.verdict not in ("improved", "regressed"):
        return
    level = (capacity.baseline.upper if capacity.verdict == "improved"
             else capacity.candidate.upper)
    stage = next((s for s in stages if s.level == level), None)
    if stage is not None and any(stage.metrics[name].claim == capacity.verdict
                                 for name in ("latency_p95_ms", "success_rate")):
        return
    capacity.reason = (f"the grid says {capacity.verdict}, but at {level} neither p95 nor the "
                       "success rate differs significantly (after Holm's correction)")
    capacity.verdict = "no significant change"


def compare_runs(baseline: Run, candidate: Run, *, slo: Slo | None = None,
                 seed: int = 20250807) -> Comparison:
    """Compare two stored runs. Stages present in both are compared when the plans match."""
    slo = slo or Slo()
    rng = np.random.default_rng(seed)
    guards: list[str] = []
    warnings: list[str] = []
    for run in (baseline, candidate):
        if run.status == "running":
            warnings.append(f"run {run.run_id} is still marked running (crashed, or in progress); "
                            "only its finished stages are used")
        elif run.status != "complete":
            warnings.append(f"run {run.run_id} is {run.status}"
                            f" ({run.manifest.get('status_reason') or 'no reason recorded'}); "
                            "compared over the stages it has")
    base_metrics = stage_metrics(baseline)
    # the first stage's block weights, drawn while the candidate loads: a guess that its first
    # stage has as many 1-second blocks as the baseline's (a wrong one costs time, not draws)
    early = _draws_ahead(base_metrics[0], base_metrics[0], rng).start() if base_metrics else None
    cand_metrics = stage_metrics(candidate)
    base_plan, cand_plan = baseline.plan, candidate.plan
    same_shape = (base_plan is not None and cand_plan is not None
                  and base_plan.same_shape(cand_plan))
    same_model = bool(base_metrics and cand_metrics
                      and base_metrics[0].model == cand_metrics[0].model)
    stages: list[StageComparison] = []
    base_keys, cand_keys = [m.key for m in base_metrics], [m.key for m in cand_metrics]
    if (base_plan is None or cand_plan is None) and base_keys != cand_keys:
        raise ComparisonError(
            f"runs {baseline.run_id} and {candidate.run_id} cannot be compared: a run without a "
            f"stage plan (imported) is matched to the other by stage name, and the names differ "
            f"(baseline {', '.join(base_keys)}; candidate {', '.join(cand_keys)}); compare an "
            "imported run with another import of the same test, or run both arms with "
            "`loadproof run`", path=candidate.path)
    if (base_plan is None or cand_plan is None) and base_keys == cand_keys:
        warnings.append("a run has no stage plan (imported?); stages matched by name")
        same_shape = True
    if not same_shape:
        guards.append("the arms' stage plans differ (model, levels or duration): they are not "
                      "compared stage by stage; only each arm's capacity is reported")
    else:
        stages = compare_stages(base_metrics, cand_metrics, slo, rng, guards,
                                overlap=lambda b, c: _overlaps(b, c, baseline, candidate))
    if early is not None:
        early.stop()
    family = apply_claim_family(stages)
    capacity = None
    if all(isinstance(run.manifest.get("capacity_search"), dict)
           for run in (baseline, candidate)):  # not imported otherwise: it imports the runner
        from .capacity import search_capacity  # capacity-search runs: brackets, not a grid

        capacity = search_capacity(baseline, candidate)
    if capacity is None:
        capacity = compare_capacity(base_metrics, cand_metrics, slo, same_model)
        _confirm_capacity(capacity, stages)
    headline = None
    for stage in reversed(stages):
        if stage.metrics["latency_p95_ms"].ratio is not None and not stage.withheld:
            headline = stage.key
            break
    if stages and headline is None:
        guards.append("no stage has a latency ratio from a fairly measured load in both arms "
                      "(enough successful requests, load delivered, arms measured alone)")
    from .resilience import compare_resilience

    resilience = compare_resilience(baseline, candidate, slo_p95_ms=slo.p95_ms,
                                    slo_success=slo.success)
    return Comparison(comparison_id(baseline, candidate), baseline, candidate, base_metrics,
                      cand_metrics, stages, capacity, headline, guards, warnings, family,
                      resilience)
