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


def _seaborn_without_scipy_stats() -> Any:
    """seaborn, imported while scipy.stats is hidden: seaborn then keeps its own small KDE
    instead of importing all of scipy.stats (about 0.8 s of each report process's start);
    the charts use no KDE. scipy.stats stays importable for anything that asks later."""
    import sys

    if "seaborn" in sys.modules or "scipy.stats" in sys.modules:
        import seaborn
        return seaborn
    sys.modules["scipy.stats"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import seaborn
    finally:
        del sys.modules["scipy.stats"]
    return seaborn


sns = _seaborn_without_scipy_stats()
from matplotlib.figure import Figure  # noqa: E402

from . import aggregate  # noqa: E402
from .compare import Comparison  # noqa: E402
from .metrics import StageMetrics  # noqa: E402
from .store import Run  # noqa: E402

PALETTE = {"baseline": "#8a8f98", "candidate": "#1565c0"}
SLO_COLOUR = "#c62828"
# drawn at the width they are shown (about 7 in on a page): text stays legible on a phone,
# where the chart is scaled to the screen's width
WIDTH_IN = 7.0
PHONE_WIDTH_IN = 4.4  # the same charts for a screen about 390 px wide
sns.set_theme(style="whitegrid", context="notebook", rc={
    "font.family": "DejaVu Sans", "font.size": 12, "axes.titlesize": 13,
    "axes.titleweight": "bold", "axes.labelsize": 12, "xtick.labelsize": 11,
    "ytick.labelsize": 11, "legend.fontsize": 11, "svg.fonttype": "path",
    # SVG element ids from a fixed salt: the same chart gives the same bytes (reproducible
    # reports; each SVG is a document of its own, so ids cannot clash between charts)
    "svg.hashsalt": "loadproof",
    "axes.spines.top": False, "axes.spines.right": False})


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

def ms_axis(ax: Any, axis: str = "y") -> None:
    """A log latency axis whose ticks read in milliseconds (5 ms, 20 ms, 100 ms), not 10¹."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    # across, "50 ms" labels need room: 1-3-10 there, 1-2-5 up the side
    subs = (1.0, 2.0, 5.0) if axis == "y" else (1.0, 3.0) if WIDTH_IN >= 5 else (1.0,)
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_minor_formatter(NullFormatter())
    target.set_major_formatter(FuncFormatter(
        lambda v, _: (f"{v:,.0f} ms" if v >= 1 else f"{v:g} ms") if v > 0 else ""))


def legend_below(ax: Any, ncol: int = 2) -> None:
    """The legend under the plot, outside the data (two columns at most on a phone)."""
    if WIDTH_IN < 5:
        ncol = min(ncol, 2)
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    # seaborn's section titles ("arm", "measure") go; "baseline: before-pool" reads "before-pool"
    kept = [(h, label.split(": ", 1)[-1] if label.startswith(("baseline: ", "candidate: ",
                                                              "run: ")) else label)
            for h, label in zip(handles, labels, strict=True)
            if label not in ("arm", "measure", "percentile")]
    handles, labels = [h for h, _ in kept], [label for _, label in kept]
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol,
                  frameon=False, fontsize=11)


_QUANTILE_FIELD = {0.5: "p50_ms", 0.95: "p95_ms"}


def _arm_points(comparison: Comparison, role: str, metrics: list[StageMetrics], q: float) \
        -> list[tuple[StageMetrics, float, tuple[float, float] | None]]:
    """(stage, value, 95% interval) of one arm's percentile at each load level, as the results
    table shows them: the comparison's value and interval for a compared stage; a stage the
    other arm lacks (the plans differ) with its own figure and no interval."""
    side = "candidate" if role == "candidate" else "baseline"
    metric_name = "latency_" + _QUANTILE_FIELD[q]
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
            value, ci = getattr(m.latency_ok, _QUANTILE_FIELD[q]), None
        else:
            value, ci = None, None
        if value:
            points.append((m, float(value), tuple(ci) if ci else None))
    return points


def main_latency(comparison: Comparison) -> Chart:
    """The first screen's chart: p50 and p95 against load for both versions, each point with
    its 95% interval, and the SLO line; every value and interval is the comparison's."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.3))
    described = []
    for (role, label, metrics), colour in zip(_arms(comparison), _palette(comparison),
                                              strict=True):
        drawn = {}
        for q, style, marker in ((0.95, "-", "o"), (0.5, "--", "s")):
            points = _arm_points(comparison, role, metrics, q)
            drawn[q] = points
            if not points:
                continue
            xs = [float(m.level or 0) for m, _, _ in points]
            ys = [v for _, v, _ in points]
            lows = [ci[0] if ci else v for _, v, ci in points]
            highs = [ci[1] if ci else v for _, v, ci in points]
            ax.fill_between(xs, lows, highs, color=colour, alpha=0.15, lw=0)
            ax.plot(xs, ys, ls=style, marker=marker, color=colour, lw=2, ms=6,
                    label=f"{label} p{int(q * 100)}")
        if drawn[0.95]:
            head, p95, _ = drawn[0.95][-1]
            p50 = next((v for m, v, _ in drawn[0.5] if m.key == head.key), None)
            described.append(f"{_arm_name(role, label)} "
                             + (f"p50 {_ms(p50)}, " if p50 is not None else "")
                             + f"p95 {_ms(p95)} at {_load(comparison, head)}")
    slo_ms = comparison.capacity.slo.p95_ms
    ax.axhline(slo_ms, color=SLO_COLOUR, lw=1.5, ls=":", label=f"SLO: p95 ≤ {slo_ms:g} ms")
    ms_axis(ax)
    levels = sorted({m.level for m in comparison.baseline_metrics if m.level is not None})
    if levels:
        ax.set_xticks(levels)
    narrow = WIDTH_IN < 5  # a phone: words that fit its width
    ax.set(xlabel=_x_label(comparison),
           ylabel="latency (successes)" if narrow else "latency of successful answers",
           title="p50 and p95 against load" if narrow
           else "Latency against load: p50 and p95, both versions")
    legend_below(ax, ncol=3)
    fig.tight_layout()
    alt = (f"Line chart, log scale: p50 and p95 latency of successful answers in ms against "
           f"load, {_stage_range(comparison)}, {_arm_list(comparison)}, each point with a "
           f"shaded 95% interval; a dotted line marks the SLO p95 of {slo_ms:g} ms. "
           + "; ".join(described) + ".")
    return Chart(fig, alt)


def _against_load(comparison: Comparison, rows: list[dict[str, Any]], y: str, style: str | None,
                  ylabel: str, title: str) -> tuple[Figure, Any]:
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.6))
    if rows:
        marks: dict[str, Any] = {"style": style, "markers": True} if style else {"marker": "o"}
        sns.lineplot(pd.DataFrame(rows), x="load", y=y, hue="arm", ax=ax,
                     palette=_palette(comparison), lw=2, markersize=7, **marks)
    levels = sorted({m.level for m in comparison.baseline_metrics if m.level is not None})
    if levels:  # ticks at the levels that were run
        ax.set_xticks(levels)
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
    title = ("Arrival-rate probe: latency against offered load" if _model(comparison) == "rate"
             else "Latency against load: p50, p95 and p99")
    fig, ax = _against_load(comparison, [{k: v for k, v in r.items() if k != "key"}
                                         for r in rows], "latency_ms", "percentile",
                            "latency (successful answers)", title)
    ax.axhline(slo_ms, color=SLO_COLOUR, lw=1.5, ls=":", label=f"SLO: p95 ≤ {slo_ms:g} ms")
    ms_axis(ax)
    legend_below(ax, ncol=3)
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
    # throughput equals goodput when every request succeeded: one line, not one hidden under
    # the other
    differ = any(m.throughput_rps != m.goodput_rps for _, _, metrics in _arms(comparison)
                 for m in metrics)
    for role, label, metrics in _arms(comparison):
        for m in metrics:
            measures = ((("throughput (all answers)", m.throughput_rps),) if differ else ()) + (
                ("goodput (successes)", m.goodput_rps),)
            for name, value in measures:
                if value is not None:
                    rows.append({"load": _x(m), "key": m.key, "req/s": value,
                                 "arm": f"{role}: {label}", "measure": name})
    fig, ax = _against_load(comparison, [{k: v for k, v in r.items() if k != "key"}
                                         for r in rows], "req/s", "measure" if differ else None,
                            "answers per second",
                            "Answers per second against load" if WIDTH_IN < 5 else
                            "Requests served per second against load" if differ else
                            "Requests served per second (all succeeded) against load")
    ax.set_ylim(bottom=0)
    legend_below(ax, ncol=2)
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
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.2))
    if rows:
        frame = pd.DataFrame(rows).set_index("stage")[["success", "429", "errors"]]
        frame.plot(kind="bar", stacked=True, ax=ax, color=["#2ca02c", "#ff7f0e", "#d62728"],
                   width=0.8, rot=0)
    ax.set(ylabel="share of requests", xlabel="", title="Answers per stage: success, 429, errors")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelsize=10)
    legend_below(ax, ncol=3)
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
    """Per second of the run (from its first request): p50, p95 and p99 of successful
    answers; seconds without answers are absent, so the gaps between stages stay gaps. Each
    stage's span (start, end, label) on the same clock is in the frame's ``attrs["spans"]``."""
    if not run.usable_stages():
        return _own_timeline(run, role)
    # per-second bins (wider on a long run) made where the rows are read (runner/aggregate.py)
    binned, stage_spans, width = aggregate.quantiles_over_time(run)
    levels = {str(r.get("key")): r.get("level") for r in run.usable_stages()}
    unit = " users" if (run.plan.model if run.plan else None) == "vus" else " req/s"
    spans = [(low, high, f"{levels[name]}{unit}" if levels.get(name) is not None else name)
             for name, low, high in stage_spans]
    result = binned.to_pandas()
    result["arm"] = f"{role}: {run.label}"
    result.attrs["spans"] = spans
    result.attrs["bin_s"] = width
    return result


def _with_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """A NaN row after every jump of more than one bin: the line breaks there."""
    import numpy as np

    if frame.empty:
        return frame
    width = float(frame.attrs.get("bin_s") or 1)
    breaks = frame["second"].diff().fillna(width) > 1.5 * width
    gaps = frame.loc[breaks, ["second"]].copy()
    gaps["second"] = gaps["second"] - 0.5 * width
    for column in ("p50_ms", "p95_ms", "p99_ms"):
        if column in frame:
            gaps[column] = np.nan
    return pd.concat([frame, gaps]).sort_values("second")


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
    frames = [(role, run, frame, frame.attrs.get("spans") or [])
              for role, run in arms for frame in [_over_time(run, role)]]
    fig, axes = plt.subplots(len(frames), 1, figsize=(WIDTH_IN, 2.7 * len(frames) + 0.9),
                             sharey=True, squeeze=False)
    for ax, (role, run, frame, spans) in zip(axes[:, 0], frames, strict=True):
        colour = PALETTE.get(role, PALETTE["candidate"])
        for index, (start, end, label) in enumerate(spans):
            ax.axvspan(start, end, color="#e8edf3" if index % 2 == 0 else "#f5f7fa", lw=0)
            ax.text((start + end) / 2, 1.0, label, transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=10, color="#333")
        if not frame.empty:
            gapped = _with_gaps(frame)
            if "p99_ms" in gapped:
                ax.fill_between(gapped["second"], gapped["p50_ms"], gapped["p99_ms"],
                                color=colour, alpha=0.25, lw=0, label="p50 to p99 band")
            ax.plot(gapped["second"], gapped["p95_ms"], color=colour, lw=1.6,
                    label="p95" if "p99_ms" in gapped else str(gapped["arm"].iloc[0]))
            if "p50_ms" in gapped:
                ax.plot(gapped["second"], gapped["p50_ms"], color=colour, lw=1, ls="--",
                        label="p50")
        ms_axis(ax)
        ax.set_ylabel(run.label, fontsize=12, fontweight="bold")
        ax.grid(axis="x", visible=False)
    axes[-1, 0].set_xlabel("seconds since the first request" if WIDTH_IN < 5 else
                           "seconds since the run's first request (gaps: between stages)")
    width = max((int(f.attrs.get("bin_s") or 1) for _, _, f, _ in frames), default=1)
    per = "per second" if width == 1 else f"per {width} s"
    fig.suptitle(f"Latency {per}: p50, p95, band to p99" if WIDTH_IN < 5 else
                 f"Latency over time, {per}: p50, p95 and the band to p99",
                 fontweight="bold", fontsize=13)
    legend_below(axes[-1, 0], ncol=3)
    axes[-1, 0].get_legend().set_bbox_to_anchor((0.5, -0.45)) if axes[-1, 0].get_legend() \
        else None
    fig.tight_layout()
    alt = (f"Line charts, log scale, one per run: p50 and p95 latency of successful answers {per} "
           f"in ms with a band to p99, over each run's time, its stages shaded and "
           f"labelled by load ({_stage_range(comparison)}), {_arm_list(comparison)}.")
    parts = []
    for role, run, frame, _ in frames:
        name = _arm_name(role, run.label)
        if not frame.empty and not run.usable_stages():  # a tool's own timeline (Locust)
            name += " (Locust's p95 of recent requests, failures included, not per second)"
        if frame.empty:
            parts.append(f"{name} no successful answers")
        else:
            parts.append(f"{name} from {_ms(float(frame['p95_ms'].min()))} to "
                         f"{_ms(float(frame['p95_ms'].max()))} over "
                         f"{int(frame['second'].max()) + int(frame.attrs.get('bin_s') or 1)} s")
    alt += (f" {'Per-second' if width == 1 else f'Per-{width}-second'} p95 latency of "
            f"successful answers: {'; '.join(parts)}.")
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
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.3))
    if frames:
        sns.ecdfplot(pd.concat(frames), x="latency_ms", weights="count", hue="arm", ax=ax, lw=2,
                     palette=[PALETTE["baseline"], PALETTE["candidate"]][:len(frames)])
        ms_axis(ax, "x")
        for y in (0.5, 0.95):
            ax.axhline(y, color="#999", lw=0.8, ls=":")
        legend = ax.get_legend()
        if legend is not None:
            legend.set_title("")
            sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
                            frameon=False)
            moved = ax.get_legend()
            for text in moved.get_texts() if moved is not None else []:  # "baseline: X" → "X"
                text.set_text(text.get_text().split(": ", 1)[-1])
    where_title = next((_load(comparison, m) for m in comparison.baseline_metrics
                        if m.key == key), key)
    ax.set(xlabel="latency (successful answers)", ylabel="share answered within",
           title=(f"Latency at {where_title}" if WIDTH_IN < 5 else
                  f"Distribution of latency at {where_title}") if key
           else "Distribution of latency")
    fig.tight_layout()
    stage_metrics = next((m for m in comparison.baseline_metrics if m.key == key), None)
    where = (f"stage {key} ({_load(comparison, stage_metrics)})"
             if stage_metrics is not None and stage_metrics.level is not None
             else f"stage {key}" if key else "no stage (none could be compared)")
    alt = (f"Cumulative distribution (ECDF) of the latency of successful answers in ms, log scale, at "
           f"{where}, {_arm_list(comparison)}: {'; '.join(described)}.")
    return Chart(fig, alt)


ALL_CHARTS = {
    "main_latency": main_latency,
    "latency_vs_load": latency_vs_load,
    "throughput_vs_load": throughput_vs_load,
    "outcome_shares": outcome_shares,
    "latency_over_time": latency_over_time,
    "latency_ecdf": latency_ecdf,
}
