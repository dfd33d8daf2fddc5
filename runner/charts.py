"""The report's charts (seaborn/matplotlib), each a function of a Comparison that returns the
figure with its alt text: each draws the plan ``chartdata`` makes (the plotted values and the
alt text taken from them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


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

from . import chartdata  # noqa: E402
from .compare import Comparison  # noqa: E402
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


def _palette(comparison: Comparison) -> list[str]:
    return [PALETTE["baseline"], PALETTE["candidate"]][:len(chartdata.arms(comparison))]


def _x_label(comparison: Comparison) -> str:
    model = chartdata.model(comparison)
    return "virtual users" if model == "vus" else ("arrival rate (req/s)" if model == "rate"
                                                    else "stage")


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


def main_latency(comparison: Comparison) -> Chart:
    """The first screen's chart: p50 and p95 against load for both versions, each point with
    its 95% interval, and the SLO line; every value and interval is the comparison's."""
    plan = chartdata.main_latency(comparison)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.3))
    for (_, label, drawn), colour in zip(plan.data["arms"], _palette(comparison), strict=True):
        for q, style, marker in ((0.95, "-", "o"), (0.5, "--", "s")):
            points = drawn[q]
            if not points:
                continue
            xs = [float(m.level or 0) for m, _, _ in points]
            ys = [v for _, v, _ in points]
            lows = [ci[0] if ci else v for _, v, ci in points]
            highs = [ci[1] if ci else v for _, v, ci in points]
            ax.fill_between(xs, lows, highs, color=colour, alpha=0.15, lw=0)
            ax.plot(xs, ys, ls=style, marker=marker, color=colour, lw=2, ms=6,
                    label=f"{label} p{int(q * 100)}")
    slo_ms = plan.data["slo_ms"]
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
    return Chart(fig, plan.alt)


def _against_load(comparison: Comparison, rows: list[dict[str, Any]], y: str, style: str | None,
                  ylabel: str, title: str) -> tuple[Figure, Any]:
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.6))
    rows = [{k: v for k, v in r.items() if k != "key"} for r in rows]
    if rows:
        marks: dict[str, Any] = {"style": style, "markers": True} if style else {"marker": "o"}
        sns.lineplot(pd.DataFrame(rows), x="load", y=y, hue="arm", ax=ax,
                     palette=_palette(comparison), lw=2, markersize=7, **marks)
    levels = sorted({m.level for m in comparison.baseline_metrics if m.level is not None})
    if levels:  # ticks at the levels that were run
        ax.set_xticks(levels)
    ax.set(xlabel=_x_label(comparison), ylabel=ylabel, title=title)
    return fig, ax


def latency_vs_load(comparison: Comparison) -> Chart:
    plan = chartdata.latency_vs_load(comparison)
    slo_ms = plan.data["slo_ms"]
    title = ("Arrival-rate probe: latency against offered load"
             if chartdata.model(comparison) == "rate"
             else "Latency against load: p50, p95 and p99")
    fig, ax = _against_load(comparison, plan.data["rows"], "latency_ms", "percentile",
                            "latency (successful answers)", title)
    ax.axhline(slo_ms, color=SLO_COLOUR, lw=1.5, ls=":", label=f"SLO: p95 ≤ {slo_ms:g} ms")
    ms_axis(ax)
    legend_below(ax, ncol=3)
    fig.tight_layout()
    return Chart(fig, plan.alt)


def throughput_vs_load(comparison: Comparison) -> Chart:
    plan = chartdata.throughput_vs_load(comparison)
    differ = plan.data["differ"]
    fig, ax = _against_load(comparison, plan.data["rows"], "req/s", "measure" if differ else None,
                            "answers per second",
                            "Answers per second against load" if WIDTH_IN < 5 else
                            "Requests served per second against load" if differ else
                            "Requests served per second (all succeeded) against load")
    ax.set_ylim(bottom=0)
    legend_below(ax, ncol=2)
    fig.tight_layout()
    return Chart(fig, plan.alt)


def outcome_shares(comparison: Comparison) -> Chart:
    plan = chartdata.outcome_shares(comparison)
    rows = plan.data["rows"]
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
    return Chart(fig, plan.alt)


def _frame(line: chartdata.Timeline) -> pd.DataFrame:
    """A timeline as the drawing takes it: a pandas frame with an ``arm`` column, its spans
    and bin width in ``attrs``."""
    if line.frame.is_empty():
        return pd.DataFrame()
    result = line.frame.to_pandas()
    result["arm"] = line.arm
    if line.run.usable_stages():
        result.attrs["spans"] = line.spans
        result.attrs["bin_s"] = line.bin_s
    return result


def _over_time(run: Run, role: str) -> pd.DataFrame:
    """Per second of the run (from its first request): p50, p95 and p99 of successful
    answers; seconds without answers are absent, so the gaps between stages stay gaps. Each
    stage's span (start, end, label) on the same clock is in the frame's ``attrs["spans"]``."""
    return _frame(chartdata.timeline(run, role))


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


def latency_over_time(comparison: Comparison) -> Chart:
    plan = chartdata.latency_over_time(comparison)
    lines: list[chartdata.Timeline] = plan.data["timelines"]
    fig, axes = plt.subplots(len(lines), 1, figsize=(WIDTH_IN, 2.7 * len(lines) + 0.9),
                             sharey=True, squeeze=False)
    for ax, line in zip(axes[:, 0], lines, strict=True):
        colour = PALETTE.get(line.role, PALETTE["candidate"])
        frame = _frame(line)
        # a run's stages are drawn even when none of them had a successful answer
        for index, (start, end, label) in enumerate(line.spans):
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
        ax.set_ylabel(line.run.label, fontsize=12, fontweight="bold")
        ax.grid(axis="x", visible=False)
    axes[-1, 0].set_xlabel("seconds since the first request" if WIDTH_IN < 5 else
                           "seconds since the run's first request (gaps: between stages)")
    per = plan.data["per"]
    fig.suptitle(f"Latency {per}: p50, p95, band to p99" if WIDTH_IN < 5 else
                 f"Latency over time, {per}: p50, p95 and the band to p99",
                 fontweight="bold", fontsize=13)
    legend_below(axes[-1, 0], ncol=3)
    axes[-1, 0].get_legend().set_bbox_to_anchor((0.5, -0.45)) if axes[-1, 0].get_legend() \
        else None
    fig.tight_layout()
    return Chart(fig, plan.alt)


def latency_ecdf(comparison: Comparison, stage: str | None = None) -> Chart:
    plan = chartdata.latency_ecdf(comparison, stage)
    frames = [counts.to_pandas().assign(arm=arm) for arm, counts in plan.data["histograms"]]
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
    key, where_title = plan.data["key"], plan.data["where"]
    ax.set(xlabel="latency (successful answers)", ylabel="share answered within",
           title=(f"Latency at {where_title}" if WIDTH_IN < 5 else
                  f"Distribution of latency at {where_title}") if key
           else "Distribution of latency")
    fig.tight_layout()
    return Chart(fig, plan.alt)


# each plan's drawing, by the plan's name (chartdata.PLANS)
ALL_CHARTS = {name: globals()[name] for name in chartdata.PLANS}
