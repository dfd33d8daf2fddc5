"""What each of the report's charts plots, and its alt text (what the chart shows: arms,
metric, stage range, key values), made from the same rows without drawing anything.
``charts`` draws these plans; ``report.md`` uses their alt text alone, so writing it needs
neither matplotlib nor seaborn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from . import aggregate
from .compare import Comparison
from .metrics import StageMetrics
from .store import Run


def arms(comparison: Comparison) -> list[tuple[str, str, list[StageMetrics]]]:
    """(role, label, stage metrics) of each arm drawn: one arm when both are the same run."""
    if comparison.baseline.path == comparison.candidate.path:  # one arm on its own
        return [("run", comparison.baseline.label, comparison.baseline_metrics)]
    return [("baseline", comparison.baseline.label, comparison.baseline_metrics),
            ("candidate", comparison.candidate.label, comparison.candidate_metrics)]


def model(comparison: Comparison) -> str | None:
    return comparison.baseline_metrics[0].model if comparison.baseline_metrics else None


def x_value(m: StageMetrics) -> Any:
    return m.level if m.level is not None else m.key


# --- alt text: plain sentences built from the plotted values -------------------------------

def arm_name(role: str, label: str) -> str:
    """How an arm is named in alt text: its label, and its role when that differs."""
    return label if role in ("run", label) else f"{label} ({role})"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def arm_list(comparison: Comparison) -> str:
    names = [arm_name(role, label) for role, label, _ in arms(comparison)]
    return ("for the run " if len(names) == 1 else "for ") + _and(names)


def load(comparison: Comparison, m: StageMetrics) -> str:
    """One stage as a reader says it: "150 virtual users", "750 requests/s" or its key."""
    if m.level is None:
        return f"stage {m.key}"
    unit = {"vus": "virtual users", "rate": "requests/s"}.get(model(comparison) or "", "")
    return f"{m.level:,} {unit}".strip()


def stage_range(comparison: Comparison) -> str:
    metrics = comparison.baseline_metrics or comparison.candidate_metrics
    if not metrics:
        return "no stages"
    first, last = metrics[0], metrics[-1]
    count = f"{len(metrics)} stage{'s' if len(metrics) != 1 else ''}"
    if len(metrics) == 1:
        return f"one stage, {load(comparison, first)}"
    if first.level is not None and last.level is not None:
        return f"{count} from {first.level:,} to {load(comparison, last)}"
    return f"{count}, {first.key} to {last.key}"


def ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _arm_values(rows: list[dict[str, Any]], column: str, fmt: Any,
                roles: list[tuple[str, str]]) -> str:
    """ "baseline 186 ms, optimized 106 ms" from one row per arm (arms without a row: none)."""
    parts = []
    for role, label in roles:
        row = next((r for r in rows if r["arm"] == f"{role}: {label}"), None)
        parts.append(f"{arm_name(role, label)} {fmt(row[column]) if row else 'no figure'}")
    return ", ".join(parts)


def _roles(comparison: Comparison) -> list[tuple[str, str]]:
    return [(role, label) for role, label, _ in arms(comparison)]


def _last_stage_rows(comparison: Comparison, rows: list[dict[str, Any]], **match: str) \
        -> tuple[StageMetrics | None, list[dict[str, Any]]]:
    """The heaviest stage that has a plotted value, and its rows matching ``match``."""
    metrics = comparison.baseline_metrics or comparison.candidate_metrics
    for m in reversed(metrics):
        picked = [r for r in rows if r["key"] == m.key
                  and all(r[k] == v for k, v in match.items())]
        if picked:
            return m, picked
    return None, []


# --- the plans ------------------------------------------------------------------------------

@dataclass
class Plan:
    """One chart's plotted values (``data``, a chart's own shape) and its alt text."""

    data: dict[str, Any] = field(default_factory=dict)
    alt: str = ""


QUANTILE_FIELD = {0.5: "p50_ms", 0.95: "p95_ms"}
Point = tuple[StageMetrics, float, tuple[float, float] | None]


def _arm_points(comparison: Comparison, role: str, metrics: list[StageMetrics], q: float) \
        -> list[Point]:
    """(stage, value, 95% interval) of one arm's percentile at each load level, as the results
    table shows them: the comparison's value and interval for a compared stage; a stage the
    other arm lacks (the plans differ) with its own figure and no interval."""
    side = "candidate" if role == "candidate" else "baseline"
    metric_name = "latency_" + QUANTILE_FIELD[q]
    compared = {s.key: s.metrics[metric_name] for s in comparison.stages}
    least = comparison.capacity.slo.min_successes
    points = []
    for m in metrics:
        if m.level is None:
            continue
        metric = compared.get(m.key)
        if metric is not None:
            value, ci = getattr(metric, side), getattr(metric, f"{side}_ci95")
        elif m.successes >= least:
            value, ci = getattr(m.latency_ok, QUANTILE_FIELD[q]), None
        else:
            value, ci = None, None
        if value:
            points.append((m, float(value), tuple(ci) if ci else None))
    return points


def main_latency(comparison: Comparison) -> Plan:
    """p50 and p95 against load for both versions, each point with its 95% interval, and the
    SLO line; every value and interval is the comparison's. ``data["arms"]``: (role, label,
    {quantile: points}) per arm."""
    described = []
    drawn_arms = []
    for role, label, metrics in arms(comparison):
        drawn = {q: _arm_points(comparison, role, metrics, q) for q in (0.95, 0.5)}
        drawn_arms.append((role, label, drawn))
        if drawn[0.95]:
            head, p95, _ = drawn[0.95][-1]
            p50 = next((v for m, v, _ in drawn[0.5] if m.key == head.key), None)
            described.append(f"{arm_name(role, label)} "
                             + (f"p50 {ms(p50)}, " if p50 is not None else "")
                             + f"p95 {ms(p95)} at {load(comparison, head)}")
    slo_ms = comparison.capacity.slo.p95_ms
    alt = (f"Line chart, log scale: p50 and p95 latency of successful answers in ms against "
           f"load, {stage_range(comparison)}, {arm_list(comparison)}, each point with a "
           f"shaded 95% interval; a dotted line marks the SLO p95 of {slo_ms:g} ms. "
           + "; ".join(described) + ".")
    return Plan({"arms": drawn_arms, "slo_ms": slo_ms}, alt)


def latency_vs_load(comparison: Comparison) -> Plan:
    """p50, p95 and p99 of each stage's successful answers against load; ``data["rows"]``."""
    rows = []
    skipped: dict[str, list[str]] = {}
    for role, label, metrics in arms(comparison):
        for m in metrics:
            if m.successes < comparison.capacity.slo.min_successes:
                skipped.setdefault(arm_name(role, label), []).append(m.key)
                continue
            for name in ("p50_ms", "p95_ms", "p99_ms"):
                value = getattr(m.latency_ok, name)
                if value is not None:
                    rows.append({"load": x_value(m), "key": m.key, "latency_ms": value,
                                 "arm": f"{role}: {label}",
                                 "percentile": name.removesuffix("_ms")})
    slo_ms = comparison.capacity.slo.p95_ms
    alt = (f"Line chart, log scale: p50, p95 and p99 latency of successful answers in ms against "
           f"load, {stage_range(comparison)}, {arm_list(comparison)}; a dotted line marks "
           f"the SLO p95 of {slo_ms:g} ms.")
    last, picked = _last_stage_rows(comparison, rows, percentile="p95")
    if last is not None:
        alt += (f" p95 at {load(comparison, last)}: "
                f"{_arm_values(picked, 'latency_ms', ms, _roles(comparison))}.")
    if skipped:
        alt += (f" No latency point where a stage had fewer than "
                f"{comparison.capacity.slo.min_successes} successful requests: "
                + "; ".join(f"{name} {', '.join(keys)}" for name, keys in skipped.items()) + ".")
    return Plan({"rows": rows, "slo_ms": slo_ms}, alt)


def throughput_vs_load(comparison: Comparison) -> Plan:
    """Answers per second against load; ``data["rows"]`` and ``data["differ"]`` (throughput
    differs from goodput somewhere: both lines, else goodput alone)."""
    rows = []
    # throughput equals goodput when every request succeeded: one line, not one hidden under
    # the other
    differ = any(m.throughput_rps != m.goodput_rps for _, _, metrics in arms(comparison)
                 for m in metrics)
    for role, label, metrics in arms(comparison):
        for m in metrics:
            measures = ((("throughput (all answers)", m.throughput_rps),) if differ else ()) + (
                ("goodput (successes)", m.goodput_rps),)
            for name, value in measures:
                if value is not None:
                    rows.append({"load": x_value(m), "key": m.key, "req/s": value,
                                 "arm": f"{role}: {label}", "measure": name})
    alt = (f"Line chart of throughput and goodput (successful answers) in requests/s against load, "
           f"{stage_range(comparison)}, {arm_list(comparison)}.")
    last, picked = _last_stage_rows(comparison, rows, measure="goodput (successes)")
    if last is not None:
        alt += (f" Goodput at {load(comparison, last)}: "
                f"{_arm_values(picked, 'req/s', lambda v: f'{v:,.0f} req/s', _roles(comparison))}.")
    return Plan({"rows": rows, "differ": differ}, alt)


def outcome_shares(comparison: Comparison) -> Plan:
    """Each stage's and arm's shares of successes, 429s and errors; ``data["rows"]``."""
    rows: list[dict[str, Any]] = []
    for role, label, metrics in arms(comparison):
        for m in metrics:
            if m.requests:
                rows.append({"stage": f"{x_value(m)}\n{role}",
                             "success": m.successes / m.requests,
                             "429": m.rate_limited / m.requests, "errors": m.errors / m.requests,
                             "arm": label, "role": role, "where": load(comparison, m)})
    alt = (f"Stacked bar chart of the share of requests that succeeded, were rate-limited "
           f"(429) or failed, one bar per stage and arm, {stage_range(comparison)}, "
           f"{arm_list(comparison)}.")
    lowest = []
    for role, label in _roles(comparison):
        arm_rows = [r for r in rows if r["role"] == role]
        name = arm_name(role, label)
        if not arm_rows:
            lowest.append(f"{name} no requests")
        elif all(r["success"] == 1 for r in arm_rows):
            lowest.append(f"{name} 100% at every stage")
        else:
            worst = min(arm_rows, key=lambda r: r["success"])
            lowest.append(f"{name} {worst['success']:.2%} at {worst['where']} "
                          f"({worst['429']:.2%} 429, {worst['errors']:.2%} errors)")
    alt += f" Lowest success share: {', '.join(lowest)}."
    return Plan({"rows": rows}, alt)


@dataclass
class Timeline:
    """One run's latency over time: ``frame`` (``second`` and the quantiles' columns, seconds
    without answers absent), its stages' spans (start, end, label) and the bin width in s."""

    role: str
    run: Run
    frame: pl.DataFrame
    arm: str
    spans: list[tuple[float, float, str]] = field(default_factory=list)
    bin_s: int = 1


def timeline(run: Run, role: str) -> Timeline:
    """Per second of the run (from its first request), or per wider bin on a long run: p50,
    p95 and p99 of successful answers; each stage's span on the same clock."""
    if not run.usable_stages():
        return _own_timeline(run, role)
    # per-second bins (wider on a long run) made where the rows are read (runner/aggregate.py)
    binned, stage_spans, width = aggregate.quantiles_over_time(run)
    levels = {str(r.get("key")): r.get("level") for r in run.usable_stages()}
    unit = " users" if (run.plan.model if run.plan else None) == "vus" else " req/s"
    spans = [(low, high, f"{levels[name]}{unit}" if levels.get(name) is not None else name)
             for name, low, high in stage_spans]
    return Timeline(role, run, binned, f"{role}: {run.label}", spans, width)


def _own_timeline(run: Run, role: str) -> Timeline:
    """A summary-only run's timeline from its tool (Locust's _stats_history.csv, see
    loadproof.formats.locust.timeline): the tool's p95 of recent requests, failures included,
    at each of its rows."""
    empty = Timeline(role, run, pl.DataFrame(), f"{role}: {run.label}")
    files = [run.path / s["timeline_file"] for s in run.stages if s.get("timeline_file")]
    if not files or not files[0].is_file():
        return empty
    frame = pl.read_parquet(files[0], columns=["timestamp", "p95_ms"]).drop_nulls("p95_ms")
    if frame.is_empty():
        return empty
    start = frame["timestamp"].min()
    return Timeline(role, run, frame.select(
        ((pl.col("timestamp") - start).dt.total_milliseconds() // 1000).alias("second"),
        "p95_ms"),
        f"{role}: {run.label} (Locust's p95 of recent requests, failures included)")


def latency_over_time(comparison: Comparison) -> Plan:
    """Each run's latency over time; ``data["timelines"]`` and ``data["bin_s"]`` (the widest
    bin, named in the title)."""
    runs = [("baseline", comparison.baseline), ("candidate", comparison.candidate)]
    if comparison.baseline.path == comparison.candidate.path:
        runs = [("run", comparison.baseline)]
    lines = [timeline(run, role) for role, run in runs]
    width = max((line.bin_s for line in lines), default=1)
    per = "per second" if width == 1 else f"per {width} s"
    alt = (f"Line charts, log scale, one per run: p50 and p95 latency of successful answers {per} "
           f"in ms with a band to p99, over each run's time, its stages shaded and "
           f"labelled by load ({stage_range(comparison)}), {arm_list(comparison)}.")
    parts = []
    for line in lines:
        name = arm_name(line.role, line.run.label)
        empty = line.frame.is_empty()
        if not empty and not line.run.usable_stages():  # a tool's own timeline (Locust)
            name += " (Locust's p95 of recent requests, failures included, not per second)"
        if empty:
            parts.append(f"{name} no successful answers")
        else:
            p95 = line.frame["p95_ms"].to_numpy()
            last = int(line.frame["second"].to_numpy().max())
            parts.append(f"{name} from {ms(float(np.nanmin(p95)))} to "
                         f"{ms(float(np.nanmax(p95)))} over "
                         f"{last + line.bin_s} s")
    alt += (f" {'Per-second' if width == 1 else f'Per-{width}-second'} p95 latency of "
            f"successful answers: {'; '.join(parts)}.")
    return Plan({"timelines": lines, "bin_s": width, "per": per}, alt)


def latency_ecdf(comparison: Comparison, stage: str | None = None) -> Plan:
    """The distribution of successful latencies at one stage (the headline stage unless
    given), from each arm's log-bucketed histogram; ``data["histograms"]`` ((arm, counts) per
    arm with answers), ``data["key"]`` and ``data["where"]`` (the stage as the title says
    it)."""
    key = stage or comparison.headline_stage
    histograms = []
    described = []
    for role, label, metrics in arms(comparison):
        m = next((m for m in metrics if m.key == key), None)
        run = comparison.baseline if role in ("baseline", "run") else comparison.candidate
        counts = aggregate.latency_histogram(run, m.key) if m is not None else pl.DataFrame()
        if m is not None and not counts.is_empty():
            histograms.append((f"{role}: {label}", counts))
            described.append(f"{arm_name(role, label)} {m.latency_ok.count:,} answers, median "
                             f"{ms(float(m.latency_ok.p50_ms or 0))}, p95 "
                             f"{ms(float(m.latency_ok.p95_ms or 0))}")
        else:
            described.append(f"{arm_name(role, label)} no successful answers")
    where_title = next((load(comparison, m) for m in comparison.baseline_metrics
                        if m.key == key), key)
    stage_metrics = next((m for m in comparison.baseline_metrics if m.key == key), None)
    where = (f"stage {key} ({load(comparison, stage_metrics)})"
             if stage_metrics is not None and stage_metrics.level is not None
             else f"stage {key}" if key else "no stage (none could be compared)")
    alt = (f"Cumulative distribution (ECDF) of the latency of successful answers in ms, log scale, at "
           f"{where}, {arm_list(comparison)}: {'; '.join(described)}.")
    return Plan({"histograms": histograms, "key": key, "where": where_title}, alt)


PLANS = {
    "main_latency": main_latency,
    "latency_vs_load": latency_vs_load,
    "throughput_vs_load": throughput_vs_load,
    "outcome_shares": outcome_shares,
    "latency_over_time": latency_over_time,
    "latency_ecdf": latency_ecdf,
}
