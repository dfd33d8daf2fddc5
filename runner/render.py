"""Text renderings of a comparison: the terminal table and the JSON document."""

from __future__ import annotations

import json
from typing import Any

from . import stats
from .achievements import regression_texts
from .compare import Comparison, MetricComparison
from .outcome import threshold_lines


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "share":
        return f"{value:.1%}"
    if unit == "ms":
        return f"{value:.1f}"
    return f"{value:.1f}"


def _ratio(metric: MetricComparison) -> str:
    if metric.ratio is None:
        return "—"
    ci = f" [{metric.ci95[0]:.2f}–{metric.ci95[1]:.2f}]" if metric.ci95 else ""
    mark = "*" if metric.interval == "within this run only" else ""
    return f"{metric.ratio:.2f}x{ci}{mark}"


def comparison_table(comparison: Comparison) -> str:
    base, cand = comparison.baseline, comparison.candidate
    lines = [f"baseline:  {base.label} ({base.run_id}, {base.status})",
             f"candidate: {cand.label} ({cand.run_id}, {cand.status})",
             "ratios: above 1 is better for the candidate; [95% interval]; verdicts need at "
             f"least {stats.MIN_REPEATS_FOR_VERDICT} repeats per arm", ""]
    header = f"{'stage':<12} {'metric':<16} {'baseline':>10} {'candidate':>10}  " \
             f"{'ratio [95% CI]':<22} verdict"
    lines += [header, "-" * len(header)]
    for stage in comparison.stages:
        for name in ("latency_p95_ms", "latency_p99_ms", "goodput_rps", "success_rate"):
            metric = stage.metrics[name]
            unit = " ms" if metric.unit == "ms" else ""
            lines.append(f"{stage.key:<12} {metric.label + unit:<16} "
                         f"{_num(metric.baseline, metric.unit):>10} "
                         f"{_num(metric.candidate, metric.unit):>10}  {_ratio(metric):<22} "
                         f"{metric.verdict}"
                         + (f" (headline: {metric.claim})" if metric.claim not in
                            (None, metric.verdict) else ""))
    if any(m.interval == "within this run only" for s in comparison.stages
           for m in s.metrics.values()):
        lines.append("* interval from 1 s blocks within these runs only: it does not include "
                     "run-to-run variation")
    cap = comparison.capacity
    lines += ["", f"capacity (p95 <= {cap.slo.p95_ms:g} ms, success >= {cap.slo.success:.0%}): "
                  f"baseline {cap.baseline.shown()}, candidate {cap.candidate.shown()} -> "
                  f"{cap.ratio_text()}"
                  + (f" ({cap.verdict})" if cap.ratio is not None else "")]
    for arm, capacity in (("baseline", cap.baseline), ("candidate", cap.candidate)):
        if capacity.knee_level is not None:
            lines.append(f"knee ({arm}): {capacity.knee_level} — {capacity.knee_reason}")
    for arm, run in (("baseline", base), ("candidate", cand)):
        checks = threshold_lines(run.stages)
        if checks:
            lines += ["", f"k6 thresholds ({arm}):"] + [f"  - {c}" for c in checks]
    notes = list(comparison.warnings) + list(comparison.guards)
    notes += [f"significantly worse: {text}" for text in regression_texts(comparison)]
    notes += [f"{run.label}: {w}" for run in (base, cand)
              for w in run.manifest.get("warnings") or []]
    for stage in comparison.stages:
        notes += [f"{stage.key}: {g}" for g in stage.guards]
    if notes:
        lines += ["", "caveats:"] + [f"  - {n}" for n in notes]
    return "\n".join(lines)


def comparison_json(comparison: Comparison) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, tuple):
            return list(obj)
        return str(obj)

    return json.dumps(comparison.to_dict(), indent=2, default=default)
