"""The report's charts (seaborn/matplotlib), each a function of a Comparison."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import polars as pl  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .compare import Comparison  # noqa: E402
from .metrics import StageMetrics  # noqa: E402
from .store import Run  # noqa: E402

PALETTE = {"baseline": "#7f7f7f", "candidate": "#1f77b4"}
sns.set_theme(style="whitegrid", context="notebook")


def _arms(comparison: Comparison) -> list[tuple[str, str, list[StageMetrics]]]:
    if comparison.baseline.path == comparison.candidate.path:  # one arm on its own
        return [("run", comparison.baseline.label, comparison.baseline_metrics)]
    return [("baseline", comparison.baseline.label, comparison.baseline_metrics),
            ("candidate", comparison.candidate.label, comparison.candidate_metrics)]


def _palette(comparison: Comparison) -> list[str]:
    return [PALETTE["baseline"], PALETTE["candidate"]][:len(_arms(comparison))]


def _x_label(comparison: Comparison) -> str:
    model = comparison.baseline_metrics[0].model if comparison.baseline_metrics else None
    return "virtual users" if model == "vus" else ("arrival rate (req/s)" if model == "rate"
                                                    else "stage")


def _x(m: StageMetrics) -> Any:
    return m.level if m.level is not None else m.key


def _against_load(comparison: Comparison, rows: list[dict[str, Any]], y: str, style: str,
                  ylabel: str, title: str) -> tuple[Figure, Any]:
    fig, ax = plt.subplots(figsize=(8, 4.2))
    if rows:
        sns.lineplot(pd.DataFrame(rows), x="load", y=y, hue="arm", style=style, markers=True,
                     ax=ax, palette=_palette(comparison))
    ax.set(xlabel=_x_label(comparison), ylabel=ylabel, title=title)
    return fig, ax


def latency_vs_load(comparison: Comparison) -> Figure:
    rows = []
    for role, label, metrics in _arms(comparison):
        for m in metrics:
            for name in ("p50_ms", "p95_ms", "p99_ms"):
                value = getattr(m.latency_ok, name)
                if value is not None and m.successes >= comparison.capacity.slo.min_successes:
                    rows.append({"load": _x(m), "latency_ms": value, "arm": f"{role}: {label}",
                                 "percentile": name.removesuffix("_ms")})
    fig, ax = _against_load(comparison, rows, "latency_ms", "percentile",
                            "latency of successful answers (ms)", "Latency against load")
    ax.axhline(comparison.capacity.slo.p95_ms, color="#d62728", lw=1, ls=":",
               label=f"SLO p95 {comparison.capacity.slo.p95_ms:g} ms")
    ax.set_yscale("log")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def throughput_vs_load(comparison: Comparison) -> Figure:
    rows = []
    for role, label, metrics in _arms(comparison):
        for m in metrics:
            for name, value in (("throughput", m.throughput_rps), ("goodput (successes)", m.goodput_rps)):
                if value is not None:
                    rows.append({"load": _x(m), "req/s": value, "arm": f"{role}: {label}",
                                 "measure": name})
    fig, ax = _against_load(comparison, rows, "req/s", "measure", "requests/s",
                            "Throughput and goodput")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def outcome_shares(comparison: Comparison) -> Figure:
    rows = []
    for role, label, metrics in _arms(comparison):
        for m in metrics:
            if m.requests:
                rows.append({"stage": f"{_x(m)}\n{role}", "success": m.successes / m.requests,
                             "429": m.rate_limited / m.requests, "errors": m.errors / m.requests,
                             "arm": label})
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
    return fig


def _over_time(run: Run, role: str) -> pd.DataFrame:
    frames = []
    for record in run.usable_stages():
        frame = pl.read_parquet(run.path / record["requests_file"],
                                columns=["timestamp", "duration_ms", "status"])
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    frame = pl.concat(frames).sort("timestamp")
    start = frame["timestamp"].min()
    binned = (frame.filter(pl.col("status").is_between(200, 299))
              .with_columns(((pl.col("timestamp") - start).dt.total_milliseconds() // 1000)
                            .alias("second"))
              .group_by("second").agg(pl.col("duration_ms").quantile(0.95).alias("p95_ms"))
              .sort("second"))
    result = binned.to_pandas()
    result["arm"] = f"{role}: {run.label}"
    return result


def latency_over_time(comparison: Comparison) -> Figure:
    frames = [_over_time(comparison.baseline, "baseline"),
              _over_time(comparison.candidate, "candidate")]
    frames = [f for f in frames if not f.empty]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    if frames:
        sns.lineplot(pd.concat(frames), x="second", y="p95_ms", hue="arm", ax=ax, lw=1,
                     palette=[PALETTE["baseline"], PALETTE["candidate"]][:len(frames)])
    ax.set(xlabel="seconds since the run's first request (stages back to back)",
           ylabel="p95 per second (ms)", title="Latency over time")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def latency_ecdf(comparison: Comparison, stage: str | None = None) -> Figure:
    key = stage or comparison.headline_stage
    rows = []
    for role, label, metrics in _arms(comparison):
        for m in metrics:
            if m.key == key and len(m.ok_sorted):
                rows.append(pd.DataFrame({"latency_ms": m.ok_sorted, "arm": f"{role}: {label}"}))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    if rows:
        sns.ecdfplot(pd.concat(rows), x="latency_ms", hue="arm", ax=ax,
                     palette=[PALETTE["baseline"], PALETTE["candidate"]][:len(rows)])
        ax.set_xscale("log")
    ax.set(xlabel="latency of successful answers (ms)", ylabel="share of requests",
           title=f"Latency distribution at {key}" if key else "Latency distribution")
    fig.tight_layout()
    return fig


ALL_CHARTS = {
    "latency_vs_load": latency_vs_load,
    "throughput_vs_load": throughput_vs_load,
    "outcome_shares": outcome_shares,
    "latency_over_time": latency_over_time,
    "latency_ecdf": latency_ecdf,
}
