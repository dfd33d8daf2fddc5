"""Achievement JSON (the seed's structure, measured) and the JSON Feed of achievements."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compare import RESHAPED, Comparison, MetricComparison, StageComparison
from .errors import AchievementError
from .outcome import threshold_lines
from .store import atomic_write_json, iso, read_json, utcnow

SCHEMA_PATH = Path(__file__).parent / "schemas" / "achievement.schema.json"
FEED_VERSION = "https://jsonfeed.org/version/1.1"
# a threshold that held in every repeat ("…: held", "…: held (all 3 repeats)") is no caveat
_HELD = re.compile(r": held($| \(all| \(abortOnFail\))")


@dataclass
class AchievementOptions:
    title: str | None = None
    achievement_type: str = "performance_optimization"
    interview_value: str | None = None
    salary_target: str | None = None
    completion_date: str | None = None
    # cost per instance-month in the user's currency; cost savings only when given
    unit_cost: float | None = None
    currency: str = "$"
    extra_technologies: list[str] = field(default_factory=list)


def fmt_ratio(ratio: float | None, bound: str | None = None) -> str:
    if ratio is None:
        return "n/a"
    prefix = {"at_least": "≥", "at_most": "≤"}.get(bound or "", "")
    if ratio >= 10:
        return f"{prefix}{ratio:.0f}x"
    if ratio >= 1.95:
        return f"{prefix}{ratio:.1f}x"
    if ratio != 1.0 and f"{ratio:.2f}" == "1.00":  # 0.995 is not "1.00x regressed"
        return f"{prefix}{ratio:.3f}x"
    return f"{prefix}{ratio:.2f}x"


def _files(comparison: Comparison, stage: str | None) -> list[str]:
    files = []
    for run in (comparison.baseline, comparison.candidate):
        for record in run.usable_stages():
            if stage is None or record["key"] == stage:
                files.append(str(run.path / record["requests_file"]))
    return files


def _measurement(comparison: Comparison, stage: StageComparison, metric: MetricComparison) \
        -> dict[str, Any]:
    interval = f"95% interval {metric.interval}" if metric.interval else None
    note = "; ".join(([interval] if interval else []) + metric.reasons)
    return {
        "ratio": metric.ratio, "ci95": list(metric.ci95) if metric.ci95 else None,
        "metric": metric.metric, "stage": stage.key, "baseline": metric.baseline,
        "candidate": metric.candidate, "unit": metric.unit,
        "verdict": metric.claim or metric.verdict,
        "runs": [comparison.baseline.run_id, comparison.candidate.run_id],
        "files": _files(comparison, stage.key),
        **({"note": note} if note else {}),
    }


def _display(metric: MetricComparison, reshaped: bool = False) -> str:
    """The headline string: the ratio, and the claim's verdict unless it is an improvement (a
    p95 gain whose distribution guard fired says so instead)."""
    text = fmt_ratio(metric.ratio)
    verdict = metric.claim or metric.verdict
    if reshaped:
        return f"{text} ({RESHAPED}{'' if verdict == 'improved' else ', ' + verdict})"
    if verdict == "improved":
        return text
    return f"{text} ({verdict})"


def regression_texts(comparison: Comparison) -> list[str]:
    """Every claimed significant worsening, as the title, summary and caveats name it."""
    return [f"{m.label} {fmt_ratio(m.ratio)} at {_where(s)} (worse"
            + (f", 95% interval {m.ci95[0]:.2f}–{m.ci95[1]:.2f}x)" if m.ci95 else ")")
            for s, m in comparison.regressions()]


def _where(stage: StageComparison) -> str:
    unit = {"vus": " users", "rate": " req/s"}.get(stage.baseline.model or "", "")
    return f"{stage.level}{unit}" if stage.level is not None else stage.key


# the stack of loadproof's reference service, which is what a run of a profile measured
REFERENCE_STACK = ["Python", "FastAPI", "PostgreSQL", "SQLAlchemy", "asyncpg"]


def technologies(comparison: Comparison) -> list[str]:
    """What the user measured with: the load tool, and the target's stack when it is known
    (the reference service for a profile run; a target's own stack comes from the experiment's
    ``report.stack`` or ``--technology``). Never loadproof's own libraries."""
    found: list[str] = []
    for run in (comparison.baseline, comparison.candidate):
        version = (run.manifest.get("k6") or {}).get("version")
        found.append(f"k6 {version}" if version else "k6")
        if run.manifest.get("profile"):
            found += REFERENCE_STACK
    return list(dict.fromkeys(found))


def build_achievement(comparison: Comparison, options: AchievementOptions | None = None) \
        -> dict[str, Any]:
    """The achievement record; each display string has a numeric record or an omission reason."""
    options = options or AchievementOptions()
    metrics: dict[str, str] = {}
    measurements: dict[str, Any] = {}
    omitted: dict[str, str] = {}
    head = comparison.headline
    if head is None:
        reason = ("; ".join(comparison.guards) or "no stage could be compared")
        for name in ("latency_improvement", "success_rate_improvement", "throughput_improvement"):
            omitted[name] = reason
    else:
        for name, key in (("latency_improvement", "latency_p95_ms"),
                          ("success_rate_improvement", "success_rate"),
                          ("throughput_improvement", "goodput_rps")):
            metric = head.metrics[key]
            if metric.ratio is None:
                omitted[name] = "; ".join(metric.reasons) or "not measured"
                continue
            reshaped = (key == "latency_p95_ms" and head.distribution is not None
                        and head.distribution.verdict == RESHAPED)
            metrics[name] = _display(metric, reshaped)
            measurements[name] = _measurement(comparison, head, metric)
    cap = comparison.capacity
    if cap.ratio is not None:
        claimed, bound = cap.claimed_bound()
        metrics["capacity_increase"] = cap.ratio_text() + (
            "" if cap.verdict == "improved" else f" ({cap.verdict})")
        measurements["capacity_increase"] = {
            # a gain states its lower bound, a loss its upper bound, anything else the ratio
            # of the grid's lower bounds with the verdict that it is no claim
            "ratio": claimed if claimed is not None else cap.ratio,
            "ci95": None, "bound": bound,
            "metric": f"highest {cap.model or ''} level meeting p95 <= {cap.slo.p95_ms:g} ms and "
                      f"success >= {cap.slo.success:.0%}".replace("  ", " "),
            "stage": None, "baseline": float(cap.baseline.level or 0),
            "candidate": float(cap.candidate.level or 0),
            "unit": "virtual users" if cap.model == "vus" else "requests/s",
            "verdict": cap.verdict,
            "runs": [comparison.baseline.run_id, comparison.candidate.run_id],
            "files": _files(comparison, None),
            "note": ("capacity is a load level on the plan's grid: each arm's capacity lies "
                     f"between the highest level it and every lower level met in every repeat "
                     f"and the lowest level it missed in every repeat, so the ratio is "
                     f"{cap.range_text()}") if cap.basis == "grid" else (
                "capacity from capacity searches: each arm's capacity lies between its "
                "highest confirmed passing load and the lowest failing load above it, so the "
                f"ratio is {cap.range_text()}"),
        }
    else:
        omitted["capacity_increase"] = cap.reason or "not measured"
    if options.unit_cost is None:
        omitted["cost_savings"] = ("no unit cost was given (--unit-cost); loadproof does not "
                                   "invent savings")
    elif cap.ratio is None or cap.ratio <= 0:
        omitted["cost_savings"] = f"needs a measured capacity ratio: {omitted['capacity_increase']}"
    elif cap.verdict == "regressed" or cap.ratio < 1:
        omitted["cost_savings"] = (f"capacity fell ({cap.ratio_text()}): "
                                   "the candidate needs more instances, not fewer")
    elif cap.verdict != "improved" or not cap.ratio_low or cap.ratio_low <= 1:
        omitted["cost_savings"] = (f"savings need a capacity gain whose lower bound is above 1; "
                                   f"the capacity ratio is {cap.range_text()} "
                                   f"({cap.verdict})")
    else:
        # from the grid's lower bound of the ratio, so the saving is never overstated
        saving = options.unit_cost * (1 - 1 / cap.ratio_low)
        metrics["cost_savings"] = (f"at least {options.currency}{saving:,.2f} per "
                                   "instance-month at equal load")
        measurements["cost_savings"] = {
            "ratio": cap.ratio_low, "ci95": None, "bound": "at_least",
            "metric": "unit_cost * (1 - 1 / lower bound of the capacity ratio)", "stage": None,
            "baseline": options.unit_cost, "candidate": options.unit_cost / cap.ratio_low,
            "unit": f"{options.currency} per instance-month",
            "verdict": "derived", "runs": [comparison.baseline.run_id,
                                           comparison.candidate.run_id],
            "note": "the same load needs 1/capacity-ratio of the instances",
        }
    from .resilience_report import achievement_measurements

    measurements.update(achievement_measurements(comparison))  # faulted stages, when any
    regressions = regression_texts(comparison)
    caveats = list(comparison.warnings) + list(comparison.guards)
    caveats.extend(f"significantly worse: {text}" for text in regressions)
    for stage in comparison.stages:
        caveats.extend(f"{stage.key}: {g}" for g in stage.guards)
    for run in (comparison.baseline, comparison.candidate):
        # the script's own pass/fail criteria: a crossed or aborting threshold travels along
        caveats.extend(f"{run.label}: k6 threshold {line}" for line in threshold_lines(run.stages)
                       if not _HELD.search(line) or "aborted the stage" in line)
    base, cand = comparison.baseline, comparison.candidate
    title = options.title or _default_title(metrics, measurements, base.label, cand.label,
                                            regressions)
    record = {
        "format_version": 1,
        "comparison_id": comparison.comparison_id,
        "achievement_type": options.achievement_type,
        "title": title,
        "summary": summary_text(comparison, metrics),
        "generated_at": iso(utcnow()),
        "metrics": metrics,
        "measurements": measurements,
        "omitted": omitted,
        "caveats": caveats,
        "technologies": list(dict.fromkeys(technologies(comparison)
                                           + options.extra_technologies)),
        "interview_value": options.interview_value,
        "salary_target": options.salary_target,
        "completion_date": options.completion_date or dt.date.today().isoformat(),
        "provenance": {
            "baseline_run": {"run_id": base.run_id, "label": base.label, "path": str(base.path)},
            "candidate_run": {"run_id": cand.run_id, "label": cand.label, "path": str(cand.path)},
            "k6_version": (cand.manifest.get("k6") or {}).get("version"),
            "commit": cand.manifest.get("commit_info"),
            "host": cand.manifest.get("machine_info") or {},
            "slo": {"p95_ms": cap.slo.p95_ms, "success": cap.slo.success,
                    "min_successes": cap.slo.min_successes},
        },
    }
    validate(record)
    return record


def _default_title(metrics: dict[str, str], measurements: dict[str, Any], base: str,
                   cand: str, regressions: list[str]) -> str:
    worse = f" (worse elsewhere: {'; '.join(regressions)})" if regressions else ""
    if "latency_improvement" in metrics and "(" not in metrics["latency_improvement"]:
        return f"{metrics['latency_improvement']} lower p95 latency: {cand} vs {base}{worse}"
    cap = measurements.get("capacity_increase")
    if cap is not None and cap["verdict"] in ("improved", "regressed"):
        what = "of the baseline's capacity" if cap["verdict"] == "regressed" else "capacity"
        shown = metrics["capacity_increase"].split(" (")[0]
        return f"{shown} {what}: {cand} vs {base}{worse}"
    if regressions:
        return f"{cand} vs {base}: worse at {'; '.join(regressions)}"
    return f"{cand} vs {base}: measured comparison"


def summary_text(comparison: Comparison, metrics: dict[str, str]) -> str:
    parts = []
    head = comparison.headline
    if head is not None:
        p95 = head.metrics["latency_p95_ms"]
        success = head.metrics["success_rate"]
        dist = head.distribution
        if dist is not None and dist.verdict == RESHAPED:
            assert dist.mean_baseline_ms is not None and dist.mean_candidate_ms is not None
            p50 = head.metrics["latency_p50_ms"]
            parts.append(f"At {_where(head)}, {RESHAPED}: p95 latency went from "
                         f"{p95.baseline:.1f} ms to {p95.candidate:.1f} ms "
                         f"({p95.claim or p95.verdict}), but the mean stayed "
                         f"{dist.mean_baseline_ms:.1f} → {dist.mean_candidate_ms:.1f} ms and "
                         f"the median rose {p50.baseline:.1f} → {p50.candidate:.1f} ms")
        elif p95.baseline is not None and p95.candidate is not None:
            parts.append(f"At {_where(head)}, p95 latency went from {p95.baseline:.1f} ms to "
                         f"{p95.candidate:.1f} ms ({p95.claim or p95.verdict})")
        if success.baseline is not None and success.candidate is not None:
            parts.append(f"success rate from {success.baseline:.1%} to {success.candidate:.1%}")
    if "capacity_increase" in metrics:
        cap = comparison.capacity
        parts.append(f"capacity under the SLO from {cap.baseline.shown()} to "
                     f"{cap.candidate.shown()} ({cap.ratio_text()}, {cap.verdict})")
    regressions = regression_texts(comparison)
    if regressions:
        parts.append("significantly worse: " + "; ".join(regressions))
    return "; ".join(parts) + "." if parts else "No figure could be compared."


def validate(record: dict[str, Any]) -> None:
    import sys

    # jsonschema imports rfc3987_syntax, where installed, for its "iri" format checker, and
    # that compiles some 40 grammars on import (2 CPU-seconds of every report); this
    # validation checks no format, so the module is marked absent unless already imported
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    import jsonschema  # only where a record is validated: the CLI starts faster

    schema = json.loads(SCHEMA_PATH.read_text())
    try:
        jsonschema.validate(record, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise AchievementError(f"achievement fails its schema at {where}: {exc.message}") from exc


def write_achievement(record: dict[str, Any], path: Path) -> Path:
    validate(record)
    atomic_write_json(path, record)
    return path


def update_feed(record: dict[str, Any], feed_path: Path, *, url: str | None = None,
                title: str = "loadproof achievements") -> dict[str, Any]:
    """Insert or replace this comparison's item (stable id), newest first."""
    if feed_path.is_file():
        feed = read_json(feed_path, what="achievement feed")
        if feed.get("version") != FEED_VERSION or not isinstance(feed.get("items"), list):
            raise AchievementError(f"{feed_path} is not a JSON Feed 1.1 file; move it aside",
                                   path=feed_path)
    else:
        feed = {"version": FEED_VERSION, "title": title, "items": []}
    item_id = f"loadproof:{record['comparison_id']}"
    now = iso(utcnow())
    previous = next((i for i in feed["items"] if i.get("id") == item_id), None)
    item = {
        "id": item_id,
        "title": record["title"],
        "content_text": record["summary"],
        "date_published": previous["date_published"] if previous else now,
        "date_modified": now,
        "tags": [record["achievement_type"]],
        "_loadproof": record,
    }
    if url:
        item["url"] = url
    feed["items"] = [i for i in feed["items"] if i.get("id") != item_id] + [item]
    feed["items"].sort(key=lambda i: i.get("date_modified") or "", reverse=True)
    atomic_write_json(feed_path, feed)
    return dict(feed)
