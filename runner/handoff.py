"""A Comparison read back from the ``comparison.json`` that ``loadproof report`` writes, so the
report notebook renders the comparison the CLI made instead of computing it again from every
request (see ARCHITECTURE.md, "Report").

The file holds every figure, interval, verdict and guard; what it leaves out is rebuilt from
the runs' manifests (each stage's records) or is only needed while comparing (sorted samples,
1-second blocks for the bootstrap)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from . import aggregate
from .compare import ArmCapacity, Capacity, Comparison, Distribution, MetricComparison, Slo, StageComparison
from .endpoints import rows_from_json
from .errors import RunStoreError
from .metrics import Latency, StageMetrics
from .store import Run, load_run

_STAGE_FIELDS = {f.name for f in dataclasses.fields(StageMetrics) if f.init}


def _stage(data: dict[str, Any], run: Run, *, pooled: bool) -> StageMetrics:
    values = {k: v for k, v in data.items() if k in _STAGE_FIELDS
              and k not in ("per_repeat", "latency_ok", "latency_all")}
    metrics = StageMetrics(**values, latency_ok=Latency(**data["latency_ok"]),
                           latency_all=Latency(**data["latency_all"]))
    if not metrics.summary_only:  # as metrics.stage_metrics groups the manifest's records
        repeats = set(metrics.repeats)
        metrics.records = [r for r in run.usable_stages() if r["key"] == metrics.key
                           and (pooled or int(r.get("repeat", 1)) in repeats)]
    metrics.per_repeat = [_stage(p, run, pooled=False) for p in data.get("per_repeat") or []]
    return metrics


def _metric(data: dict[str, Any]) -> MetricComparison:
    values = dict(data)
    for key in ("ci95", "baseline_ci95", "candidate_ci95"):
        if values.get(key) is not None:
            values[key] = tuple(values[key])
    values["repeats"] = tuple(values["repeats"])
    return MetricComparison(**values)


def _distribution(data: dict[str, Any] | None) -> Distribution | None:
    if not data:
        return None
    ci = data.get("mean_ci95")
    return Distribution(**{**data, "mean_ci95": tuple(ci) if ci else None})


def comparison_from_dict(data: dict[str, Any]) -> Comparison:
    """The inverse of ``Comparison.to_dict`` (the runs are opened from their stored paths)."""
    runs = {role: load_run(Path(data[role]["path"])) for role in ("baseline", "candidate")}
    arms = {role: [_stage(s, runs[role], pooled=True) for s in data[role]["stages"]]
            for role in runs}
    by_key = {role: {m.key: m for m in arms[role]} for role in arms}
    stages = [StageComparison(key=s["key"], index=s["index"], level=s["level"],
                              baseline=by_key["baseline"][s["key"]],
                              candidate=by_key["candidate"][s["key"]],
                              metrics={k: _metric(v) for k, v in s["metrics"].items()},
                              guards=list(s["guards"]), withheld=list(s["withheld"]),
                              distribution=_distribution(s.get("distribution")))
              for s in data["stages"]]
    cap = dict(data["capacity"])
    capacity = Capacity(**{**cap, "slo": Slo(**cap["slo"]),
                           "baseline": ArmCapacity(**cap["baseline"]),
                           "candidate": ArmCapacity(**cap["candidate"])})
    return Comparison(data["comparison_id"], runs["baseline"], runs["candidate"],
                      arms["baseline"], arms["candidate"], stages, capacity,
                      data["headline_stage"], list(data["guards"]), list(data["warnings"]),
                      data.get("claim_family", 0), data.get("resilience"))


def read_comparison(path: str | Path) -> Comparison:
    """A comparison.json as a Comparison; a clear RunStoreError when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        comparison = comparison_from_dict(data)
        if data.get("endpoints") is not None:  # as loadproof report wrote them beside it
            comparison.endpoints = rows_from_json(data["endpoints"])
        # the charts' inputs, used while the runs' request files are unchanged
        aggregate.keep_from_json(data.get("chart_inputs") or [])
        return comparison
    except RunStoreError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunStoreError(f"{path}: not a comparison written by loadproof "
                            f"({exc.__class__.__name__}: {exc})", path=path) from exc


def read_achievement(comparison_file: Path, comparison: Comparison) -> dict[str, Any] | None:
    """The achievement.json written beside ``comparison_file`` for the same comparison (it was
    validated against its schema when written), or None when there is none."""
    path = comparison_file.parent / "achievement.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("comparison_id") != comparison.comparison_id:
        return None
    return record


def release_samples(comparison: Comparison) -> None:
    """Drop what only comparing needed (the 1-second blocks and the bootstrap's cached
    histograms): the figures stay, the memory of one value per request goes."""
    from . import stats

    for metrics in (comparison.baseline_metrics, comparison.candidate_metrics):
        for m in metrics:
            for part in (m, *m.per_repeat):
                part.blocks = None
    stats._HISTOGRAMS.clear()
