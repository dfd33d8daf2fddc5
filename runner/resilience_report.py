"""The report's "Resilience" section, its talking points, the achievement's resilience
measurements and the "no crash" claim, all rendered from ``Comparison.resilience`` (decided
once in runner/resilience.py)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import pandas as pd

from .compare import Comparison
from .resilience import timeline

ROWS = (("fault_s", "fault active (s)", "{:.1f}"),
        ("success_during_fault", "success during the fault", "{:.1%}"),
        ("p95_during_fault_ms", "p95 during the fault (ms)", "{:,.0f}"),
        ("failed_during_fault", "failed during the fault (per repeat)", "{:,.0f}"),
        ("time_to_first_error_s", "time to first error (s)", "{:.2f}"),
        ("recovery_s", "recovery (s, to 3 s meeting the SLO)", "{:.1f}"),
        ("acknowledged_writes_lost", "acknowledged writes lost", "{:d}"),
        ("writes_unverified", "writes never read back", "{:d}"),
        ("failed_outside_fault", "failed outside the fault and recovery", "{:d}"))


def _items(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _pairs(comparison: Comparison) -> list[tuple[dict[str, Any], dict[str, Any],
                                                  dict[str, Any]]]:
    """(baseline arm, candidate arm, comparison) per faulted stage in both runs."""
    res = comparison.resilience or {}
    base = {(a["stage"], a["fault"]): a for a in _items(res.get("baseline"))}
    cand = {(a["stage"], a["fault"]): a for a in _items(res.get("candidate"))}
    return [(base[(c["stage"], c["fault"])], cand[(c["stage"], c["fault"])], c)
            for c in _items(res.get("comparison"))]


def _recovery_text(arm: dict[str, Any]) -> str:
    if arm["recovered"]:
        return f"recovered {arm['recovery_s']:.1f} s after it came back"
    return (f"had not recovered when the stage ended (at least "
            f"{arm['recovery_lower_bound_s']:.0f} s after it came back)")


def _during_text(arm: dict[str, Any]) -> str:
    success = arm["success_during_fault"]
    p95 = arm["p95_during_fault_ms"]
    if success is None:
        return "answered no request"
    return f"answered {success:.0%} of its requests successfully, p95 {p95:,.0f} ms"


def _verdict_text(metric: dict[str, Any], what: str) -> str:
    verdict = metric["verdict"]
    if verdict in ("improved", "regressed", "no significant change"):
        ci = metric.get("ci95")
        unit = "s" if metric["metric"] == "recovery_s" else ""
        shown = ""
        if ci is not None and metric.get("ci95_of") == "difference":
            scale = 100 if metric["metric"] == "success_during_fault" else 1
            unit = " points" if scale == 100 else " s"
            shown = (f" (95% interval of the difference {ci[0] * scale:+.1f} to "
                     f"{ci[1] * scale:+.1f}{unit})")
        return f"{what}: {verdict}{shown}"
    return f"{what}: {verdict}" + (f" ({metric['reason']})" if metric.get("reason") else "")


def talking_points(comparison: Comparison) -> list[str]:
    """Plain sentences from the measured resilience figures (none without a fault)."""
    points = []
    base_label, cand_label = comparison.baseline.label, comparison.candidate.label
    for base, cand, comp in _pairs(comparison):
        what = {"db-outage": "the database was down", "db-freeze": "the database hung"}.get(
            base["fault"], f"fault {base['fault']} was active")
        points.append(
            f"While {what} for {cand['fault_s']:.1f} s ({comp['stage']}, mean of "
            f"{cand['repeats']} repeats), {cand_label} {_during_text(cand)} and "
            f"{_recovery_text(cand)}; {base_label} {_during_text(base)} and "
            f"{_recovery_text(base)}.")
        metrics = comp["metrics"]
        points.append("; ".join([_verdict_text(metrics["recovery_s"], "Recovery time"),
                                 _verdict_text(metrics["success_during_fault"],
                                               "success during the fault")]) + ".")
        for label, arm in ((base_label, base), (cand_label, cand)):
            lost = arm.get("acknowledged_writes_lost")
            if lost:
                points.append(f"{label} lost {lost} acknowledged writes: tasks answered 201 "
                              "that read back as missing.")
        if all(arm.get("acknowledged_writes_lost") == 0 for arm in (base, cand)):
            points.append("No acknowledged write was lost in either arm: every task answered "
                          "201 that was read back was there.")
    claim = no_crash_claim(comparison)
    if claim:
        points.append(claim)
    return points


def no_crash_claim(comparison: Comparison) -> str | None:
    """"Zero crashes" only when it is measured: both services were started by loadproof and
    none exited on its own, every faulted stage recovered, and no request failed outside the
    fault windows and their recovery, in any stage."""
    pairs = _pairs(comparison)
    if not pairs:
        return None
    for run in (comparison.baseline, comparison.candidate):
        if not run.manifest.get("profile") or run.manifest.get("service_exits"):
            return None
    for base, cand, _ in pairs:
        for arm in (base, cand):
            if not arm["recovered"] or arm["failed_outside_fault"]:
                return None
    faulted = {base["stage"] for base, _, _ in pairs}
    for metrics in (comparison.baseline_metrics, comparison.candidate_metrics):
        for m in metrics:
            if m.key not in faulted and m.errors:
                return None
    return ("Zero crashes: neither service process exited, and outside the fault windows "
            "(and the recovery after them) no request failed in any stage.")


def achievement_measurements(comparison: Comparison) -> dict[str, dict[str, Any]]:
    """``recovery_time`` and ``availability_during_fault`` for the achievement, from the first
    faulted stage both runs share."""
    pairs = _pairs(comparison)
    if not pairs:
        return {}
    base, cand, comp = pairs[0]
    runs = [comparison.baseline.run_id, comparison.candidate.run_id]
    out = {}
    for name, key, unit, label in (
            ("recovery_time", "recovery_s", "s",
             "time from the fault's end to the first of 3 seconds meeting the SLO"),
            ("availability_during_fault", "success_during_fault", "share",
             "share of requests in flight during the fault that succeeded")):
        metric = comp["metrics"][key]
        ci = metric.get("ci95")
        note = (f"{comp['fault']} in {comp['stage']}; {metric['verdict']}"
                + (f"; 95% interval of the {metric['ci95_of']}: {ci[0]:.3g} to {ci[1]:.3g}"
                   if ci else "")
                + (f"; {metric['reason']}" if metric.get("reason") else ""))
        ratio = metric.get("ratio")
        out[name] = {
            "ratio": ratio if ratio is not None and ratio >= 0 else None,
            "ci95": None,  # the interval is of the difference, given in the note
            "bound": "at_least" if metric.get("ratio_bound") else "exact",
            "metric": label, "stage": comp["stage"],
            "baseline": metric.get("baseline"), "candidate": metric.get("candidate"),
            "unit": unit, "verdict": metric["verdict"], "runs": runs, "note": note,
        }
    return out


def metrics_frame(comparison: Comparison) -> pd.DataFrame:
    rows = []
    for base, cand, comp in _pairs(comparison):
        for key, label, fmt in ROWS:
            def shown(arm: dict[str, Any], key: str = key, fmt: str = fmt) -> str:
                value = arm.get(key)
                if key == "recovery_s" and not arm["recovered"]:
                    return f"not recovered (≥ {arm['recovery_lower_bound_s']:.0f})"
                if value is None:
                    return "—"
                return fmt.format(int(value) if fmt == "{:d}" else value)

            metric = comp["metrics"].get(key)
            rows.append({"stage": comp["stage"], "fault": comp["fault"], "figure": label,
                         comparison.baseline.label: shown(base),
                         comparison.candidate.label: shown(cand),
                         "verdict": metric["verdict"] if metric else ""})
    return pd.DataFrame(rows)


def timeline_chart(comparison: Comparison) -> tuple[bytes, str] | None:
    """Per second from the fault's start: success share and p95 of both arms, the fault
    window shaded. Returns (PNG, alt text)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    slo = comparison.capacity.slo
    frames = []
    for role, run in (("baseline", comparison.baseline), ("candidate", comparison.candidate)):
        frame = timeline(run, slo_p95_ms=slo.p95_ms, slo_success=slo.success).to_pandas()
        frame["arm"] = f"{role}: {run.label}"
        frames.append(frame)
    data = pd.concat(frames)
    if data.empty:
        return None
    keys = list(dict.fromkeys(zip(data["stage"], data["fault"], strict=True)))
    fig, axes = plt.subplots(2, len(keys), figsize=(7.5 * len(keys), 5.2), sharex="col",
                             squeeze=False)
    colours = {"baseline": "#7f7f7f", "candidate": "#1f77b4"}
    alt = []
    for col, (stage, fault) in enumerate(keys):
        part = data[(data["stage"] == stage) & (data["fault"] == fault)]
        top, bottom = axes[0][col], axes[1][col]
        for arm, rows in part.groupby("arm", sort=False):
            colour = colours["baseline" if str(arm).startswith("baseline") else "candidate"]
            top.plot(rows["second"], rows["success_share"] * 100, marker=".", color=colour,
                     label=arm)
            bottom.plot(rows["second"], rows["p95_ms"], marker=".", color=colour, label=arm)
            window = float(rows["fault_s"].mean())
            for ax in (top, bottom):  # each arm's own window: its restart took its own time
                ax.axvspan(0, window, color=colour, alpha=0.12,
                           label=f"fault active ({window:.1f} s)" if ax is top else None)
            low = rows["success_share"].min()
            alt.append(f"{arm}: fault active {window:.1f} s, lowest success {low:.0%} in a "
                       "second" if pd.notna(low) else f"{arm}: no answered request")
        top.axhline(slo.success * 100, color="black", lw=0.8, ls="--")
        bottom.axhline(slo.p95_ms, color="black", lw=0.8, ls="--")
        top.set_ylabel("success share (%)")
        bottom.set_ylabel("p95, all requests (ms)")
        bottom.set_yscale("log")
        bottom.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        bottom.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        bottom.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        bottom.set_xlabel(f"seconds from the fault's start ({fault}, {stage})")
        top.set_title(f"{fault} in {stage}: per second, repeats pooled")
        top.legend(loc="lower right", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    text = ("Per-second success share and p95 latency of both arms around the fault window "
            "(shaded), dashed lines at the SLO; " + "; ".join(alt))
    return buffer.getvalue(), text


def section(comparison: Comparison) -> str:
    """The Resilience section's HTML body."""
    res = comparison.resilience
    if res is None:
        return "<p>No fault was injected in these runs (see <code>faults:</code> in an " \
               "experiment, or <code>loadproof run --fault</code>).</p>"
    parts = []
    chart = timeline_chart(comparison)
    if chart is not None:
        png, alt = chart
        parts.append(f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
                     f'alt="{html.escape(alt)}" style="max-width:100%">')
    frame = metrics_frame(comparison)
    if not frame.empty:
        parts.append(frame.to_html(index=False, classes="lpt", border=0, na_rep="—"))
    parts.append(f"<p>Fault windows run from when the fault's start completed to when its "
                 f"stop completed. Recovery is counted in whole seconds from the fault's end to "
                 f"the first of {res['steady_seconds']} consecutive seconds meeting the SLO "
                 f"(p95 of successes ≤ {res['slo']['p95_ms']:g} ms, success ≥ "
                 f"{res['slo']['success']:.0%}); a stage that ended first gives a lower bound. "
                 "Figures are means over repeats; verdicts need 3 repeats per arm.</p>")
    points = talking_points(comparison)
    parts += [f"<blockquote>{html.escape(p)}</blockquote>" for p in points]
    parts += [f"<p><i>{html.escape(n)}</i></p>" for n in res.get("notes") or []]
    return "".join(parts)


def markdown(comparison: Comparison) -> list[str]:
    """report.md's Resilience lines (none without a fault)."""
    if comparison.resilience is None:
        return []
    frame = metrics_frame(comparison)
    out = ["## Resilience", ""]
    if not frame.empty:
        headers = list(frame.columns)
        out += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(
            index=False)]
        out.append("")
    out += [f"> {p}\n" for p in talking_points(comparison)]
    out += [f"- {n}" for n in comparison.resilience.get("notes") or []]
    return out + [""]
