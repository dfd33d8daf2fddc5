"""The report's view of measurement integrity beyond CPU: the server's count and p95 beside
k6's per stage record (from the record's ``server``), and the CPU of k6 and the target over
time for both arms (from each stage's ``resources.parquet``)."""

from __future__ import annotations

from typing import Any

from .compare import Comparison
from .store import Run


def server_columns(record: dict[str, Any]) -> dict[str, str]:
    """Client against server for one stage record: requests ("client / server") and p95
    ("client / server", ms); "—" where the server was not scraped."""
    server = record.get("server")
    if not server:
        return {"requests client / server": "—", "p95 client / server (ms)": "—"}
    if server.get("error"):
        return {"requests client / server": f"{record.get('requests', '—')} / —",
                "p95 client / server (ms)": f"server not read: {server['error']}"}

    def ms(value: Any) -> str:
        return "—" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"

    edges = server.get("edges") or {}
    note = " (window edges not clean)" if edges and not edges.get("clean") else ""
    if server.get("scope") == "test":  # a script-driven run: one window, the whole k6 test
        note += " (whole k6 test)"
    client = server.get("client_requests", record.get("requests"))
    return {"requests client / server": f"{client if client is not None else '—'} / "
                                        f"{server.get('requests_total')}{note}",
            "p95 client / server (ms)": f"{ms(server.get('client_p95_ms'))} / "
                                        f"{ms(server.get('p95_ms'))}{_bucket(server)}"}


def _bucket(server: dict[str, Any]) -> str:
    """The histogram bucket the server's p95 lies in: its figure is only that precise."""
    bounds = server.get("p95_bucket_ms")
    if not bounds:
        return ""
    low, high = bounds
    return f" (bucket {low:g}–{high:g})" if high is not None else f" (above {low:g})"


def _timeline(run: Run, processes: tuple[str, ...]) -> Any:
    """The run's resource samples in stage order: seconds since the run's first sample,
    process, CPU in cores, stage directory."""
    import polars as pl

    frames = []
    seen = set()  # a script-driven run's stages share one timeline
    for record in run.stages:
        name = record.get("resources_file")
        if not name or name in seen or not (run.path / name).is_file():
            continue
        seen.add(name)
        frame = pl.read_parquet(run.path / name).with_columns(
            pl.col("process").cast(pl.String), pl.lit(str(record.get("dir"))).alias("stage"))
        frames.append(frame.filter(pl.col("process").is_in(processes)))
    if not frames:
        return None
    data = pl.concat(frames).sort("timestamp")
    start = data["timestamp"].min()
    return data.with_columns(
        ((pl.col("timestamp") - start).dt.total_microseconds() / 1e6).alias("seconds"),
        (pl.col("cpu_percent") / 100).alias("cores")).to_pandas()


def has_timeline(comparison: Comparison) -> bool:
    """Whether either arm recorded a resource timeline (runs made before loadproof sampled
    resources, and imports, have none)."""
    return any(record.get("resources_file") for run in (comparison.baseline,
                                                          comparison.candidate)
               for record in run.stages)


def cpu_over_time(comparison: Comparison) -> Any:
    """k6's and the target's CPU (cores) over each arm's run, once a second, one panel per
    arm; the machine's total as a thin line. Stages are drawn apart (no line across the
    pauses between them)."""
    import matplotlib.pyplot as plt

    from .charts import PALETTE, Chart

    arms = [("baseline", comparison.baseline)]
    if comparison.candidate.path != comparison.baseline.path:
        arms.append(("candidate", comparison.candidate))
    fig, axes = plt.subplots(len(arms), 1, figsize=(9, 2.8 * len(arms)), sharey=True,
                             squeeze=False)
    colours = {"k6": "#d62728", "target": PALETTE["candidate"], "machine": PALETTE["baseline"]}
    described = []
    for ax, (role, run) in zip(axes[:, 0], arms, strict=True):
        data = _timeline(run, ("k6", "target", "machine"))
        ax.set_title(f"{run.label} ({role})", loc="left", fontsize=10)
        ax.set_ylabel("CPU (cores)")
        if data is None:
            ax.text(0.5, 0.5, "no resource timeline recorded", ha="center", va="center",
                    transform=ax.transAxes)
            described.append(f"{run.label}: no resource timeline recorded")
            continue
        peaks = []
        for process in ("machine", "k6", "target"):
            rows = data[data["process"] == process]
            if rows.empty:
                continue
            for i, (_, stage_rows) in enumerate(rows.groupby("stage", sort=False)):
                ax.plot(stage_rows["seconds"], stage_rows["cores"], color=colours[process],
                        linewidth=0.8 if process == "machine" else 1.6,
                        label=process if i == 0 else None)
            peaks.append(f"{process} up to {rows['cores'].max():.2f} cores "
                         f"(mean {rows['cores'].mean():.2f})")
        ax.legend(loc="upper right", fontsize=8)
        described.append(f"{run.label}: " + ", ".join(peaks))
    axes[-1, 0].set_xlabel("seconds since the run's first sample")
    fig.tight_layout()
    alt = ("CPU over time, in cores, sampled once a second during each stage: "
           + "; ".join(described) + ".")
    return Chart(fig, alt)
