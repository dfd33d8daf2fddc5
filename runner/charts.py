"""The report's charts (seaborn/matplotlib), each a function of a Comparison that returns the
figure with its alt text: what the chart shows (arms, metric, stage range, key values), taken
from the same rows the chart draws."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import polars as pl  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from . import aggregate  # noqa: E402
from .compare import Comparison  # noqa: E402
from .metrics import StageMetrics  # noqa: E402
from .store import Run  # noqa: E402

PALETTE = {"baseline": "#7f7f7f", "candidate": "#1f77b4"}
sns.set_theme(style="whitegrid", context="notebook")


@dataclass
class Chart:
    """A drawn chart and the text that stands in for it (HTML alt, screen readers)."""

    figure: Figure
    alt: str


def _arms(comparison: Comparison) -> list[tuple[str, str, list[StageMetrics]]]:
    if comparison.baseline.path == comparison.candidate.path:  # one arm on its own
        return [("run", comparison.baseline.label, comparison.baseline_metrics)]
    return [("baseline", comparison.baseline.label, comparison.baseline_metrics),
            ("candidate", comparison.candidate.label, comparison.candidate_metrics)]


def _palette(comparison: Comparison) -> list[str]:
    return [PALETTE["baseline"], PALETTE["candidate"]][:len(_arms(comparison))]


def _model(comparison: Comparison) -> str | None:
    return comparison.baseline_metrics[0].model if comparison.baseline_metrics else None


def _x_label(comparison: Comparison) -> str:
    model = _model(comparison)
    return "virtual users" if model == "vus" else ("arrival rate (req/s)" if model == "rate"
                                                    else "stage")


def _x(m: StageMetrics) -> Any:
    return m.level if m.level is not None else m.key


# --- alt text: plain sentences built from the plotted values -------------------------------

def _arm_name(role: str, label: str) -> str:
    """How an arm is named in alt text: its label, and its role when that differs."""
    return label if role in ("run", label) else f"{label} ({role})"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _arm_list(comparison: Comparison) -> str:
    names = [_arm_name(role, label) for role, label, _ in _arms(comparison)]
    return ("for the run " if len(names) == 1 else "for ") + _and(names)


def _load(comparison: Comparison, m: StageMetrics) -> str:
    """One stage as a reader says it: "150 virtual users", "750 requests/s" or its key."""
    if m.level is None:
        return f"stage {m.key}"
    unit = {"vus": "virtual users", "rate": "requests/s"}.get(_model(comparison) or "", "")
    return f"{m.level:,} {unit}".strip()


def _stage_range(comparison: Comparison) -> str:
    metrics = comparison.baseline_metrics or comparison.candidate_metrics
    if not metrics:
        return "no stages"
    first, last = metrics[0], metrics[-1]
    count = f"{len(metrics)} stage{'s' if len(metrics) != 1 else ''}"
    if len(metrics) == 1:
        return f"one stage, {_load(comparison, first)}"
    if first.level is not None and last.level is not None:
        return f"{count} from {first.level:,} to {_load(comparison, last)}"
    return f"{count}, {first.key} to {last.key}"


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _arm_values(rows: list[dict[str, Any]], column: str, fmt: Any,
                arms: list[tuple[str, str]]) -> str:
    """ "baseline 186 ms, optimized 106 ms" from one row per arm (arms without a row: none)."""
    parts = []
    for role, label in arms:
        row = next((r for r in rows if r["arm"] == f"{role}: {label}"), None)
        parts.append(f"{_arm_name(role, label)} {fmt(row[column]) if row else 'no figure'}")
    return ", ".join(parts)


def _roles(comparison: Comparison) -> list[tuple[str, str]]:
    return [(role, label) for role, label, _ in _arms(comparison)]


# --- the charts -----------------------------------------------------------------------------

def _against_load(comparison: Comparison, rows: list[dict[str, Any]], y: str, style: str,
                  ylabel: str, title: str) -> tuple[Figure, Any]:
    fig, ax = plt.subplots(figsize=(8, 4.2))
    if rows:
        sns.lineplot(pd.DataFrame(rows), x="load", y=y, hue="arm", style=style, markers=True,
                     ax=ax, palette=_palette(comparison))
    ax.set(xlabel=_x_label(comparison), ylabel=ylabel, title=title)
    return fig, ax


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


def latency_vs_load(comparison: Comparison) -> Chart:
    rows = []
    skipped: dict[str, list[str]] = {}
    for role, label, metrics in _arms(comparison):
        for m in metrics:
            if m.successes < comparison.capacity.slo.min_successes:
                skipped.setdefault(_arm_name(role, label), []).append(m.key)
                continue
            for name in ("p50_ms", "p95_ms", "p99_ms"):
                value = getattr(m.latency_ok, name)
                if value is not None:
                    rows.append({"load": _x(m), "key": m.key, "latency_ms": value,
                                 "arm": f"{role}: {label}",
                                 "percentile": name.removesuffix("_ms")})
    slo_ms = comparison.capacity.slo.p95_ms
    fig, ax = _against_load(comparison, [{k: v for k, v in r.items() if k != "key"}
                                         for r in rows], "latency_ms", "percentile",
                            "latency of successful answers (ms)", "Latency against load")
    ax.axhline(slo_ms, color="#d62728", lw=1, ls=":", label=f"SLO p95 {slo_ms:g} ms")
    ax.set_yscale("log")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    alt = (f"Line chart, log scale: p50, p95 and p99 latency of successful answers in ms against "
           f"load, {_stage_range(comparison)}, {_arm_list(comparison)}; a dotted line marks "
           f"the SLO p95 of {slo_ms:g} ms.")
    last, picked = _last_stage_rows(comparison, rows, percentile="p95")
    if last is not None:
        alt += (f" p95 at {_load(comparison, last)}: "
                f"{_arm_values(picked, 'latency_ms', _ms, _roles(comparison))}.")
    if skipped:
        alt += (f" No latency point where a stage had fewer than "
                f"{comparison.capacity.slo.min_successes} successful requests: "
                + "; ".join(f"{name} {', '.join(keys)}" for name, keys in skipped.items()) + ".")
    return Chart(fig, alt)


def throughput_vs_load(comparison: Comparison) -> Chart:
    rows = []
    for role, label, metrics in _arms(comparison):
        for m in metrics:
            for name, value in (("throughput", m.throughput_rps), ("goodput (successes)", m.goodput_rps)):
                if value is not None:
                    rows.append({"load": _x(m), "key": m.key, "req/s": value,
                                 "arm": f"{role}: {label}", "measure": name})
    fig, ax = _against_load(comparison, [{k: v for k, v in r.items() if k != "key"}
                                         for r in rows], "req/s", "measure", "requests/s",
                            "Throughput and goodput")
    ax.legend(fontsize=8)
    fig.tight_layout()
    alt = (f"Line chart of throughput and goodput (successful answers) in requests/s against load, "
           f"{_stage_range(comparison)}, {_arm_list(comparison)}.")
    last, picked = _last_stage_rows(comparison, rows, measure="goodput (successes)")
    if last is not None:
        alt += (f" Goodput at {_load(comparison, last)}: "
                f"{_arm_values(picked, 'req/s', lambda v: f'{v:,.0f} req/s', _roles(comparison))}.")
    return Chart(fig, alt)


def outcome_shares(comparison: Comparison) -> Chart:
    rows: list[dict[str, Any]] = []
    for role, label, metrics in _arms(comparison):
        for m in metrics:
            if m.requests:
                rows.append({"stage": f"{_x(m)}\n{role}", "success": m.successes / m.requests,
                             "429": m.rate_limited / m.requests, "errors": m.errors / m.requests,
                             "arm": label, "role": role, "where": _load(comparison, m)})
    fig, ax = plt.subplots(figsize=(8, 3.8))
    if rows:
        frame = pd.DataFrame(rows).set_index("stage")[["success", "429", "errors"]]
        frame.plot(kind="bar", stacked=True, ax=ax, color=["#2ca02c", "#ff7f0e", "#d62728"],
                   width=0.8, rot=0)
    ax.set(ylabel="share of requests", xlabel="", title="Outcomes per stage")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    alt = (f"Stacked bar chart of the share of requests that succeeded, were rate-limited "
           f"(429) or failed, one bar per stage and arm, {_stage_range(comparison)}, "
           f"{_arm_list(comparison)}.")
    lowest = []
    for role, label in _roles(comparison):
        arm_rows = [r for r in rows if r["role"] == role]
        name = _arm_name(role, label)
        if not arm_rows:
            lowest.append(f"{name} no requests")
        elif all(r["success"] == 1 for r in arm_rows):
            lowest.append(f"{name} 100% at every stage")
        else:
            worst = min(arm_rows, key=lambda r: r["success"])
            lowest.append(f"{name} {worst['success']:.2%} at {worst['where']} "
                          f"({worst['429']:.2%} 429, {worst['errors']:.2%} errors)")
    alt += f" Lowest success share: {', '.join(lowest)}."
    return Chart(fig, alt)


def _over_time(run: Run, role: str) -> pd.DataFrame:
    if not run.usable_stages():
        return _own_timeline(run, role)
    result = aggregate.p95_per_second(run).to_pandas()
    if result.empty:
        return pd.DataFrame()
    result["arm"] = f"{role}: {run.label}"
    return result


def _own_timeline(run: Run, role: str) -> pd.DataFrame:
    """A summary-only run's timeline from its tool (Locust's _stats_history.csv, see
    loadproof.formats.locust.timeline): the tool's p95 of recent requests, failures included,
    at each of its rows."""
    files = [run.path / s["timeline_file"] for s in run.stages if s.get("timeline_file")]
    if not files or not files[0].is_file():
        return pd.DataFrame()
    frame = pl.read_parquet(files[0], columns=["timestamp", "p95_ms"]).drop_nulls("p95_ms")
    if frame.is_empty():
        return pd.DataFrame()
    start = frame["timestamp"].min()
    result = frame.select(((pl.col("timestamp") - start).dt.total_milliseconds() // 1000)
                          .alias("second"), "p95_ms").to_pandas()
    result["arm"] = f"{role}: {run.label} (Locust's p95 of recent requests, failures included)"
    return result


def latency_over_time(comparison: Comparison) -> Chart:
    arms = [("baseline", comparison.baseline), ("candidate", comparison.candidate)]
    if comparison.baseline.path == comparison.candidate.path:
        arms = [("run", comparison.baseline)]
    frames = [(role, run, _over_time(run, role)) for role, run in arms]
    drawn = [f for _, _, f in frames if not f.empty]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    if drawn:
        sns.lineplot(pd.concat(drawn), x="second", y="p95_ms", hue="arm", ax=ax, lw=1,
                     palette=[PALETTE["baseline"], PALETTE["candidate"]][:len(drawn)])
    ax.set(xlabel="seconds since the run's first request (stages back to back)",
           ylabel="p95 per second (ms)", title="Latency over time")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    alt = (f"Line chart, log scale: p95 latency of successful answers per second in ms over each "
           f"run's time, its stages back to back ({_stage_range(comparison)}), "
           f"{_arm_list(comparison)}.")
    parts = []
    for role, run, frame in frames:
        name = _arm_name(role, run.label)
        if not frame.empty and not run.usable_stages():  # a tool's own timeline (Locust)
            name += " (Locust's p95 of recent requests, failures included, not per second)"
        if frame.empty:
            parts.append(f"{name} no successful answers")
        else:
            parts.append(f"{name} from {_ms(float(frame['p95_ms'].min()))} to "
                         f"{_ms(float(frame['p95_ms'].max()))} over "
                         f"{int(frame['second'].max()) + 1} s")
    alt += f" Per-second p95: {'; '.join(parts)}."
    return Chart(fig, alt)


def latency_ecdf(comparison: Comparison, stage: str | None = None) -> Chart:
    key = stage or comparison.headline_stage
    frames = []
    described = []
    for role, label, metrics in _arms(comparison):
        m = next((m for m in metrics if m.key == key), None)
        run = comparison.baseline if role in ("baseline", "run") else comparison.candidate
        counts = aggregate.latency_histogram(run, m.key).to_pandas() if m is not None \
            else pd.DataFrame()
        if m is not None and not counts.empty:
            frames.append(counts.assign(arm=f"{role}: {label}"))
            described.append(f"{_arm_name(role, label)} {m.latency_ok.count:,} answers, median "
                             f"{_ms(float(m.latency_ok.p50_ms or 0))}, p95 "
                             f"{_ms(float(m.latency_ok.p95_ms or 0))}")
        else:
            described.append(f"{_arm_name(role, label)} no successful answers")
    fig, ax = plt.subplots(figsize=(8, 3.8))
    if frames:
        sns.ecdfplot(pd.concat(frames), x="latency_ms", weights="count", hue="arm", ax=ax,
                     palette=[PALETTE["baseline"], PALETTE["candidate"]][:len(frames)])
        ax.set_xscale("log")
    ax.set(xlabel="latency of successful answers (ms)", ylabel="share of requests",
           title=f"Latency distribution at {key}" if key else "Latency distribution")
    fig.tight_layout()
    stage_metrics = next((m for m in comparison.baseline_metrics if m.key == key), None)
    where = (f"stage {key} ({_load(comparison, stage_metrics)})"
             if stage_metrics is not None and stage_metrics.level is not None
             else f"stage {key}" if key else "no stage (none could be compared)")
    alt = (f"Cumulative distribution (ECDF) of the latency of successful answers in ms, log scale, at "
           f"{where}, {_arm_list(comparison)}: {'; '.join(described)}.")
    return Chart(fig, alt)


ALL_CHARTS = {
    "latency_vs_load": latency_vs_load,
    "throughput_vs_load": throughput_vs_load,
    "outcome_shares": outcome_shares,
    "latency_over_time": latency_over_time,
    "latency_ecdf": latency_ecdf,
}
