"""Comparing two runs stage by stage: improvement ratios (above 1 is always better) with 95%
bootstrap intervals, verdicts, capacity under an SLO, and the claim guards that keep a
misleading figure out of a report."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import stats
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
    MetricSpec("goodput_rps", "goodput (2xx/s)", "req/s", False),
    MetricSpec("success_rate", "success rate", "share", False),
)
METRIC_BY_NAME = {m.name: m for m in METRICS}
_QUANTILE = {"latency_p50_ms": 0.50, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}


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
    baseline: float | None
    candidate: float | None
    ratio: float | None
    ci95: tuple[float, float] | None
    verdict: str
    reasons: list[str] = field(default_factory=list)


@dataclass
class StageComparison:
    key: str
    index: int
    level: int | None
    baseline: StageMetrics
    candidate: StageMetrics
    metrics: dict[str, MetricComparison]
    guards: list[str] = field(default_factory=list)


@dataclass
class ArmCapacity:
    level: int | None
    bound: str  # "exact" (a higher stage failed), "at_least" (top stage met the SLO), "none"
    checks: dict[str, str]
    knee_level: int | None = None
    knee_reason: str | None = None

    def shown(self, unit: str = "") -> str:
        """The level as reports print it: "≥150" when the top stage still met the SLO."""
        prefix = "≥" if self.bound == "at_least" else ""
        return f"{prefix}{self.level}{unit}" if self.level is not None else "none"


# how a capacity ratio's bound reads after the ratio
_BOUND_WORDS = {"at_least": " (lower bound)", "at_most": " (upper bound)"}


@dataclass
class Capacity:
    slo: Slo
    model: str | None
    baseline: ArmCapacity
    candidate: ArmCapacity
    ratio: float | None
    ratio_bound: str | None  # "exact", "at_least" or "at_most"
    reason: str | None

    def ratio_text(self) -> str:
        """"0.33x (upper bound)", or why there is no ratio."""
        if self.ratio is None:
            return f"no ratio: {self.reason}"
        return f"{self.ratio:.2f}x{_BOUND_WORDS.get(self.ratio_bound or '', '')}"


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

    def stage(self, key: str) -> StageComparison:
        for stage in self.stages:
            if stage.key == key:
                return stage
        raise KeyError(key)

    @property
    def headline(self) -> StageComparison | None:
        return self.stage(self.headline_stage) if self.headline_stage else None

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
                        "metrics": {k: asdict(v) for k, v in s.metrics.items()}}
                       for s in self.stages],
            "capacity": asdict(self.capacity),
            "headline_stage": self.headline_stage,
            "guards": self.guards,
            "warnings": self.warnings,
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


def _draws(m: StageMetrics, metric: str, rng: np.random.Generator) -> stats.FloatArray:
    parts = m.per_repeat or [m]
    per_repeat = []
    for part in parts:
        if metric in _QUANTILE:
            per_repeat.append(stats.draw_quantile(part.ok_sorted, _QUANTILE[metric], rng))
        elif metric == "throughput_rps":
            per_repeat.append(stats.draw_rate(part.requests, part.duration_s, rng))
        elif metric == "goodput_rps":
            per_repeat.append(stats.draw_rate(part.successes, part.duration_s, rng))
        elif metric == "success_rate":
            per_repeat.append(stats.draw_share(part.successes, part.requests, rng))
        else:
            raise ValueError(metric)
    return stats.combine_repeats(per_repeat, rng)


def compare_metric(spec: MetricSpec, base: StageMetrics, cand: StageMetrics,
                   rng: np.random.Generator, min_successes: int) -> MetricComparison:
    b, c = _value(base, spec.name), _value(cand, spec.name)
    reasons: list[str] = []
    if spec.latency:
        for arm, m in (("baseline", base), ("candidate", cand)):
            if m.successes < min_successes:
                what = "only failures" if m.successes == 0 else f"only {m.successes} successful"
                reasons.append(f"{arm} has {what} requests at {m.key} (minimum "
                               f"{min_successes}): no latency figure")
        if reasons:
            return MetricComparison(spec.name, spec.label, spec.unit, spec.lower_is_better,
                                    None if base.successes < min_successes else b,
                                    None if cand.successes < min_successes else c,
                                    None, None, "not comparable", reasons)
    ratio, why = stats.improvement_ratio(b, c, spec.lower_is_better)
    if ratio is None:
        reasons.append(why or "no ratio")
        return MetricComparison(spec.name, spec.label, spec.unit, spec.lower_is_better, b, c,
                                None, None, "not comparable", reasons)
    if base.summary_only or cand.summary_only:
        reasons.append("no interval: an arm was imported from a k6 summary alone, without "
                       "per-request timings, so the ratio cannot be called significant")
        return MetricComparison(spec.name, spec.label, spec.unit, spec.lower_is_better, b, c,
                                ratio, None, "no interval", reasons)
    ci = stats.ratio_interval(_draws(base, spec.name, rng), _draws(cand, spec.name, rng),
                              spec.lower_is_better, ratio)
    result = stats.verdict(ci)
    if ci is None:
        reasons.append("the interval could not be estimated (too many zero draws)")
    elif result == "no significant change":
        reasons.append(f"the 95% interval [{ci[0]:.2f}, {ci[1]:.2f}] spans 1")
    return MetricComparison(spec.name, spec.label, spec.unit, spec.lower_is_better, b, c,
                            ratio, ci, result, reasons)


def _apply_tradeoff_guard(stage: StageComparison) -> None:
    """A latency gain while the candidate's success rate fell is a trade-off."""
    success = stage.metrics["success_rate"]
    b, c = success.baseline, success.candidate
    fell = b is not None and c is not None and (success.verdict == "regressed" or c < b - 0.01)
    if not fell:
        return
    assert b is not None and c is not None
    for name in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
        metric = stage.metrics[name]
        if metric.verdict == "improved":
            metric.verdict = "trade-off"
            metric.reasons.append(f"latency fell but the success rate fell too, from {b:.1%} to "
                                  f"{c:.1%}: a trade-off, not an improvement")
    stage.guards.append(f"success rate fell from {b:.1%} to {c:.1%}; latency gains at "
                        f"{stage.key} are reported as a trade-off")


def arm_capacity(metrics: list[StageMetrics], slo: Slo) -> ArmCapacity:
    checks = {}
    best: int | None = None
    top_level = max((m.level or 0) for m in metrics) if metrics else None
    for m in metrics:
        ok, why = slo.check(m)
        checks[m.key] = ("meets SLO: " if ok else "misses SLO: ") + why
        if ok and m.level is not None and (best is None or m.level > best):
            best = m.level
    bound = "none" if best is None else ("at_least" if best == top_level else "exact")
    knee_level, knee_reason = find_knee(metrics)
    return ArmCapacity(best, bound, checks, knee_level, knee_reason)


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
    ratio: float | None = None
    bound: str | None = None
    reason: str | None = None
    if not same_model:
        reason = "the arms used different load models: no capacity ratio"
    elif b.level is None:
        reason = "the baseline met the SLO at no stage: no capacity ratio"
    elif c.level is None:
        ratio, bound = 0.0, "exact"
        reason = "the candidate met the SLO at no stage"
    elif b.bound == "at_least" and c.bound == "at_least":
        reason = ("both arms met the SLO at every stage, so their capacities are beyond the "
                  "plan: no capacity ratio (add higher stages)")
    elif b.bound == "at_least":
        # the baseline held every stage, the candidate fell short: a regression whose size is
        # known only as a ceiling (the baseline might hold far more than the plan asked)
        ratio, bound = c.level / b.level, "at_most"
    else:
        ratio = c.level / b.level
        bound = "at_least" if c.bound == "at_least" else "exact"
    return Capacity(slo, model, b, c, ratio, bound, reason)


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
    cand_metrics = stage_metrics(candidate)
    base_plan, cand_plan = baseline.plan, candidate.plan
    same_shape = (base_plan is not None and cand_plan is not None
                  and base_plan.same_shape(cand_plan))
    same_model = bool(base_metrics and cand_metrics
                      and base_metrics[0].model == cand_metrics[0].model)
    stages: list[StageComparison] = []
    if (base_plan is None or cand_plan is None) and \
            [m.key for m in base_metrics] == [m.key for m in cand_metrics]:
        warnings.append("a run has no stage plan (imported?); stages matched by name")
        same_shape = True
    if not same_shape:
        guards.append("the arms' stage plans differ (model, levels or duration): they are not "
                      "compared stage by stage; only each arm's capacity is reported")
    else:
        cand_by_key = {m.key: m for m in cand_metrics}
        for base in base_metrics:
            cand = cand_by_key.get(base.key)
            if cand is None:
                guards.append(f"stage {base.key} is missing from the candidate: not compared")
                continue
            metrics = {spec.name: compare_metric(spec, base, cand, rng, slo.min_successes)
                       for spec in METRICS}
            stage = StageComparison(base.key, base.index, base.level, base, cand, metrics)
            for metric in metrics.values():
                if metric.verdict == "not comparable":
                    stage.guards.extend(r for r in metric.reasons if r not in stage.guards)
            _apply_tradeoff_guard(stage)
            stages.append(stage)
    capacity = compare_capacity(base_metrics, cand_metrics, slo, same_model)
    headline = None
    for stage in reversed(stages):
        if stage.metrics["latency_p95_ms"].ratio is not None:
            headline = stage.key
            break
    if stages and headline is None:
        guards.append("no stage has enough successful requests in both arms for a latency ratio")
    return Comparison(comparison_id(baseline, candidate), baseline, candidate, base_metrics,
                      cand_metrics, stages, capacity, headline, guards, warnings)
