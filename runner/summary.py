"""Portfolio text from measured figures only: the dashboard table, per-stage lines, talking
points, methodology, and the Markdown summary."""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import stats
from .achievements import fmt_ratio, regression_texts
from .compare import DEFAULT_MIN_SUCCESSES, RESHAPED, Comparison, MetricComparison
from .integrity import server_columns
from .metrics import StageMetrics
from .outcome import threshold_lines
from .store import Run

METHOD_TEXT = (
    "Latency percentiles are nearest-rank over successful answers; 429 answers count as "
    "rate-limited, not as errors. Each figure is computed per repeat; an arm's value is the "
    "geometric mean of its repeats' values and a ratio compares those (above 1 favours the "
    "candidate). With at least 3 repeats per arm the 95% interval is Welch's t on the "
    "per-repeat log values, so it includes run-to-run variation, and a verdict (improved, "
    "regressed, no significant change) follows from it; the headline claims (p95, goodput, "
    "success rate at every stage) are corrected together with Holm's method. With fewer "
    "repeats the figures are shown as measured, not as verdicts: with one repeat the interval "
    "is a block bootstrap over 1-second blocks and covers variation within that run only. "
    "The first screen's chart shows each version's own p50 and p95, with the 95% interval "
    "between its repeats when it has two or more (none from one run). The compare "
    "notebook's stage tables show success shares with Wilson intervals. A stage where the "
    "planned load was not "
    "delivered (over 1% of iterations dropped, or under 95% of the planned rate), where the "
    "load generator or the machine was saturated, where other processes took material CPU, or "
    "where the arms' measured windows overlapped, makes no claim. Capacity is the highest "
    "level that it and every lower level met the SLO at in every repeat, up to the lowest "
    "level missed in every repeat; the capacity ratio is shown as its range on that grid, and "
    "a capacity verdict also needs the level that decides it to show a corrected p95 or "
    "success-rate claim.")


def _ms(value: float | None) -> str:
    return "—" if value is None else (f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _rps(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} req/s"


def _improvement(metric: MetricComparison) -> str:
    if metric.ratio is None:
        return f"not comparable ({'; '.join(metric.reasons)})" if metric.reasons \
            else "not comparable"
    ci = f" [{metric.ci95[0]:.2f}–{metric.ci95[1]:.2f}]" if metric.ci95 else ""
    if metric.claim is not None:
        verdict = metric.claim
    elif metric.verdict in ("improved", "regressed", "trade-off"):
        # outside the corrected claim family (p95, goodput, success rate): a figure, no claim
        verdict = "(table only, not a claim)"
    else:
        verdict = metric.verdict
    word = {"improved": "better", "regressed": "worse"}.get(verdict, verdict)
    return f"{fmt_ratio(metric.ratio)}{ci} {word}"


def _share(successes: int, total: int) -> str:
    """A share with its Wilson 95% interval, never zero-width at 0% or 100%."""
    if total <= 0:
        return "—"
    interval = stats.wilson(successes, total)
    assert interval is not None
    return f"{successes / total:.1%} [{interval[0]:.2%}–{interval[1]:.2%}]"


def dashboard_rows(comparison: Comparison) -> list[dict[str, str]]:
    """The seed's "Metrics Dashboard": before / after / improvement, at the headline stage."""
    rows: list[dict[str, str]] = []
    head = comparison.headline
    if head is not None:
        suffix = {"vus": " users", "rate": " req/s"}.get(head.baseline.model or "", "")
        where = f" @ {head.level if head.level is not None else head.key}{suffix}"
        for name, fmt in (("latency_p95_ms", _ms), ("latency_p99_ms", _ms),
                          ("success_rate", _pct), ("goodput_rps", _rps),
                          ("throughput_rps", _rps)):
            metric = head.metrics[name]
            rows.append({"Metric": metric.label.capitalize() + where,
                         "Before": fmt(metric.baseline), "After": fmt(metric.candidate),
                         "Improvement": _improvement(metric)})
    cap = comparison.capacity
    unit = " users" if cap.model == "vus" else " req/s"
    rows.append({
        "Metric": f"Capacity (p95 ≤ {cap.slo.p95_ms:g} ms, success ≥ {cap.slo.success:.0%})",
        "Before": _capacity_cell(cap.baseline.shown(unit), comparison.baseline_metrics),
        "After": _capacity_cell(cap.candidate.shown(unit), comparison.candidate_metrics),
        "Improvement": f"{cap.ratio_text()} {cap.verdict}" if cap.ratio is not None
        else f"no ratio: {cap.reason}",
    })
    return rows


def _capacity_cell(shown: str, metrics: list[StageMetrics]) -> str:
    """An arm's capacity; stages without a load level (imported) have none to meet."""
    if shown != "none":
        return shown
    if not any(m.level is not None for m in metrics):
        return "no load level (imported stages)"
    return "no level held (missed, or not measured fairly)"


def dashboard_frame(comparison: Comparison) -> pd.DataFrame:
    return pd.DataFrame(dashboard_rows(comparison))


def _ok_ms(m: StageMetrics, value: float | None, min_successes: int) -> str:
    """A latency of successful requests, or "—" when too few succeeded to give one (the
    comparison's own rule)."""
    return _ms(value) if m.successes >= min_successes else "—"


def stage_line(m: StageMetrics, min_successes: int = DEFAULT_MIN_SUCCESSES) -> str:
    unit = "users" if m.model == "vus" else "req/s"
    level = f"{m.level} {unit}" if m.level is not None else m.key
    p95 = (f"p95 {_ms(m.latency_ok.p95_ms)}" if m.successes >= min_successes else
           f"no p95 ({m.successes} successful requests, fewer than {min_successes})")
    parts = [f"Stage {m.index} ({level}): {_pct(m.success_rate)} success",
             p95, f"{_rps(m.goodput_rps)} goodput",
             f"{m.requests:,} requests"]
    if m.rate_limited:
        parts.append(f"{m.rate_limited_share:.1%} rate-limited (429)")
    if m.errors:
        parts.append(f"{m.error_share:.1%} errors")
    if m.dropped_iterations:
        parts.append(f"{m.dropped_iterations} dropped iterations")
    if m.status != "complete":
        parts.append("INCOMPLETE")
    return ", ".join(parts)


def stage_frame(comparison: Comparison) -> pd.DataFrame:
    rows = []
    least = comparison.capacity.slo.min_successes
    for role, run, metrics in (("baseline", comparison.baseline, comparison.baseline_metrics),
                               ("candidate", comparison.candidate,
                                comparison.candidate_metrics)):
        for m in metrics:
            rows.append({"arm": f"{role}: {run.label}", "stage": m.key, "level": m.level,
                         "requests": m.requests, "success": _share(m.successes, m.requests),
                         "429": _pct(m.rate_limited_share), "errors": _pct(m.error_share),
                         "goodput": _rps(m.goodput_rps),
                         "p50": _ok_ms(m, m.latency_ok.p50_ms, least),
                         "p95": _ok_ms(m, m.latency_ok.p95_ms, least),
                         "p99": _ok_ms(m, m.latency_ok.p99_ms, least),
                         "p95 (all)": _ms(m.latency_all.p95_ms),
                         "dropped": m.dropped_iterations if m.dropped_iterations is not None
                         else "—"})
    return pd.DataFrame(rows)


def ratio_frame(comparison: Comparison) -> pd.DataFrame:
    rows = []
    for stage in comparison.stages:
        for metric in stage.metrics.values():
            rows.append({"stage": stage.key, "metric": metric.label,
                         "baseline": metric.baseline, "candidate": metric.candidate,
                         "ratio": metric.ratio,
                         "ci95": (f"{metric.ci95[0]:.2f}–{metric.ci95[1]:.2f}"
                                  if metric.ci95 else "—"),
                         "interval": metric.interval or "—",
                         "verdict": metric.verdict})
    return pd.DataFrame(rows)


def caveats(comparison: Comparison) -> list[str]:
    notes = list(comparison.warnings) + list(comparison.guards)
    notes += [f"significantly worse: {text}" for text in regression_texts(comparison)]
    for stage in comparison.stages:
        notes += [f"{stage.key}: {g}" for g in stage.guards]
        for metric in stage.metrics.values():
            if metric.claim in ("no significant change", "not replicated") \
                    and metric.metric == "latency_p95_ms":
                notes.append(f"{stage.key}: p95 latency: {metric.claim} "
                             f"({'; '.join(metric.reasons)})")
    if comparison.capacity.reason:
        notes.append(f"capacity: {comparison.capacity.reason}")
    return list(dict.fromkeys(notes))


def talking_points(comparison: Comparison) -> list[str]:
    """Interview talking points, filled from measured numbers only; nothing when unmeasured."""
    points = []
    base, cand = comparison.baseline, comparison.candidate
    levels = [m.level for m in comparison.baseline_metrics if m.level is not None]
    model = comparison.baseline_metrics[0].model if comparison.baseline_metrics else None
    unit = "concurrent users" if model == "vus" else "requests/s"
    if levels:
        total = sum(m.requests for m in comparison.baseline_metrics + comparison.candidate_metrics)
        points.append(f"I load-tested both versions with k6 at {', '.join(map(str, levels))} "
                      f"{unit} — {total:,} measured requests in all, every figure traceable to "
                      f"runs {base.run_id} and {cand.run_id}.")
    head = comparison.headline
    if head is not None:
        p95 = head.metrics["latency_p95_ms"]
        success = head.metrics["success_rate"]
        # an imported stage has no load level: name the stage instead
        at = f"{head.level} {unit}" if head.level is not None else f"stage {head.key}"
        dist = head.distribution
        p50 = head.metrics["latency_p50_ms"]
        if dist is not None and dist.verdict == RESHAPED:
            points.append(f"At {at}, p95 latency fell from {_ms(p95.baseline)} to "
                          f"{_ms(p95.candidate)}, but the mean stayed "
                          f"{_ms(dist.mean_baseline_ms)} → {_ms(dist.mean_candidate_ms)} and the "
                          f"median rose {_ms(p50.baseline)} → {_ms(p50.candidate)}: {RESHAPED} "
                          "— the slowest requests gained what the typical one lost"
                          + (" (in too few runs per version to call it a verdict)."
                             if p95.claim == "not replicated" else "."))
        elif p95.claim == "improved" and p95.ci95:
            points.append(f"At {at}, p95 latency fell from {_ms(p95.baseline)} to "
                          f"{_ms(p95.candidate)}: {fmt_ratio(p95.ratio)} faster (95% interval "
                          f"{p95.ci95[0]:.2f}–{p95.ci95[1]:.2f}x), with the success rate at "
                          f"{_pct(success.candidate)} (was {_pct(success.baseline)}).")
        elif p95.claim == "trade-off":
            points.append(f"At {at}, p95 latency fell from {_ms(p95.baseline)} to "
                          f"{_ms(p95.candidate)}, but the success rate fell from "
                          f"{_pct(success.baseline)} to {_pct(success.candidate)}: I present it "
                          "as a trade-off (load shedding), not a speed-up.")
        elif p95.claim == "regressed":
            points.append(f"Measured honestly, p95 latency at {at} got worse "
                          f"({_ms(p95.baseline)} → {_ms(p95.candidate)}); the gain is elsewhere "
                          "or not there.")
        elif p95.claim == "not replicated":
            points.append(f"At {at}, p95 latency measured {_ms(p95.baseline)} "
                          f"before and {_ms(p95.candidate)} after, in too few repeats to call "
                          "it a change.")
        else:
            points.append(f"At {at}, p95 latency showed no significant change "
                          f"({_ms(p95.baseline)} → {_ms(p95.candidate)}).")
    for text in regression_texts(comparison):
        points.append(f"Not everything improved: {text}.")
    cap = comparison.capacity
    if cap.ratio is not None and cap.verdict == "improved":
        points.append(f"Under an SLO of p95 ≤ {cap.slo.p95_ms:g} ms and ≥ {cap.slo.success:.0%} "
                      f"success, capacity went from {cap.baseline.level} to "
                      f"{cap.candidate.level} {unit} ({cap.ratio_text()}).")
    elif cap.ratio is not None and cap.verdict == "regressed":
        held = f"{'every stage up to ' if cap.baseline.bound == 'at_least' else ''}"
        points.append(f"Capacity under the SLO (p95 ≤ {cap.slo.p95_ms:g} ms, ≥ "
                      f"{cap.slo.success:.0%} success) fell: the baseline held {held}"
                      f"{cap.baseline.level} {unit}, the candidate "
                      + (f"held {cap.candidate.level} {unit}" if cap.candidate.level
                         else "held no stage")
                      + f" ({cap.ratio_text()}).")
    return points


def profile_settings(run: Run) -> dict[str, Any]:
    profile = run.manifest.get("profile") or {}
    return dict(profile.get("settings") or {})


def run_window(run: Run) -> tuple[str, str]:
    """When a run measured: its first stage's start to its own last stage's end (the
    manifest's ``ended_at`` is stamped when the whole pipeline closes the run, after the other
    arm's stages too); the manifest's stamps only when no stage carries its own."""
    stages = [s for s in run.manifest.get("stages") or [] if s.get("started_at")]
    starts = [str(s["started_at"]) for s in stages]
    ends = [str(s["ended_at"]) for s in stages if s.get("ended_at")]
    start = min(starts) if starts else str(run.manifest.get("started_at") or "—")
    end = max(ends) if ends else str(run.manifest.get("ended_at") or "—")
    return start, end


def methodology_rows(comparison: Comparison) -> list[dict[str, str]]:
    rows = []
    for role, run in (("baseline", comparison.baseline), ("candidate", comparison.candidate)):
        m = run.manifest
        plan = m.get("plan") or {}
        script = m.get("script") or {}
        commit = m.get("commit_info") or {}
        machine = m.get("machine_info") or {}
        rows.append({
            "arm": f"{role}: {run.label}",
            "run id": run.run_id,
            "target": str(m.get("target") or "imported"),
            "profile": str((m.get("profile") or {}).get("name") or "—"),
            "plan": (f"{plan.get('model')} {plan.get('levels')} × {plan.get('duration_s')} s "
                     f"(warm-up {plan.get('warmup_s')} s) × {plan.get('repeat')}"
                     if plan else "imported (no plan)"),
            "script": f"{script.get('name', '—')} sha256 {str(script.get('sha256', ''))[:12]}",
            "k6": str((m.get("k6") or {}).get("version") or "—"),
            "commit": (f"{str(commit.get('id', ''))[:10]}{' (dirty)' if commit.get('dirty') else ''}"
                       if commit else "—"),
            "machine": f"{machine.get('system')} {machine.get('machine')}, "
                       f"{machine.get('cpu_count')} CPUs, Python {machine.get('python')}",
            "window": " → ".join(run_window(run)),
        })
    return rows


def integrity_rows(comparison: Comparison) -> list[dict[str, str]]:
    """Per arm and stage record: the CPU that k6, the target and everything else used while it
    was measured, and whether the load generator or the machine limited it."""
    def cores(value: Any) -> str:
        return "—" if value is None else f"{value:.2f}"

    rows = []
    for role, metrics in (("baseline", comparison.baseline_metrics),
                          ("candidate", comparison.candidate_metrics)):
        for m in metrics:
            for record in m.records:
                cpu = record.get("conditions") or {}
                guard = record.get("generator") or {}
                if not cpu and not guard:
                    continue
                verdict = ("limited: " + "; ".join(guard.get("reasons") or [])
                           if guard.get("limited") else ("ok" if guard else "—"))
                if cpu.get("disturbed"):
                    verdict += "; disturbed by other processes"
                rows.append({"arm": role, "stage": str(record.get("dir", m.key)),
                             "k6 (cores)": cores(cpu.get("k6_cpu_cores")),
                             "target (cores)": cores(cpu.get("target_cpu_cores")),
                             "others (cores)": cores(cpu.get("other_cpu_cores"))
                             + (" incl. target" if "target" in (cpu.get("other_includes") or [])
                                else ""),
                             "machine (cores)": cores(cpu.get("machine_cpu_cores")),
                             **server_columns(record),
                             "generator": verdict})
    return rows


def settings_frame(comparison: Comparison) -> pd.DataFrame:
    base, cand = profile_settings(comparison.baseline), profile_settings(comparison.candidate)
    keys = [k for k in dict.fromkeys(list(base) + list(cand)) if k != "profile"]
    return pd.DataFrame([{"setting": k, comparison.baseline.label: base.get(k, "—"),
                          comparison.candidate.label: cand.get(k, "—"),
                          "changed": "yes" if base.get(k) != cand.get(k) else ""} for k in keys])


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row[h]).replace("|", "\\|") for h in headers) + " |")
    return "\n".join(lines)


def render_markdown(comparison: Comparison, achievement: dict[str, Any], title: str) -> str:
    base, cand = comparison.baseline, comparison.candidate
    out = [f"# {title}", "",
           f"*{cand.label}* against *{base.label}*, measured with k6. Every number below comes "
           f"from runs `{base.run_id}` and `{cand.run_id}`; ratios above 1 favour "
           f"*{cand.label}*, with 95% intervals (see Methodology).", "",
           "## Executive summary", "", achievement.get("summary", ""), ""]
    if achievement.get("metrics"):
        out += ["**Headline figures:** " + ", ".join(
            f"{k.replace('_', ' ')}: **{v}**" for k, v in achievement["metrics"].items()), ""]
    for key, reason in (achievement.get("omitted") or {}).items():
        out.append(f"- *{key.replace('_', ' ')}* not claimed: {reason}")
    out += ["", "## Metrics dashboard", "", _md_table(dashboard_rows(comparison)), "",
            "## Load test results", ""]
    for role, run, metrics in (("Before", base, comparison.baseline_metrics),
                               ("After", cand, comparison.candidate_metrics)):
        out += [f"**{role} ({run.label})**", "", "```"]
        out += [stage_line(m, comparison.capacity.slo.min_successes) for m in metrics]
        total = sum(m.requests for m in metrics)
        limited = sum(m.rate_limited for m in metrics)
        out += [f"Total requests: {total:,}",
                f"Rate limited:   {limited / total:.1%}" if total else "", "```", ""]
    checks = [(run.label, threshold_lines(run.stages)) for run in (base, cand)]
    if any(lines for _, lines in checks):
        out += ["## k6 thresholds", ""]
        out += [f"- *{label}* {line}" for label, lines in checks for line in lines] + [""]
    notes = caveats(comparison) + [f"{run.label}: {w}" for run in (base, cand)
                                   for w in run.manifest.get("warnings") or []]
    out += ["## Caveats", ""] + ([f"- {n}" for n in notes] or ["- none raised"]) + [""]
    points = talking_points(comparison)
    out += ["## Interview talking points", ""]
    for point in points:
        out += [f"> {point}", ""]
    from .resilience_report import markdown as resilience_markdown

    out += resilience_markdown(comparison)
    integrity = integrity_rows(comparison)
    if integrity:
        out += ["## Measurement integrity", "", _md_table(integrity), ""]
    out += ["## Methodology and provenance", "", METHOD_TEXT, "",
            _md_table(methodology_rows(comparison)), ""]
    return "\n".join(out)
