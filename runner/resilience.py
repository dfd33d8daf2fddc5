"""Resilience figures of faulted stages: what users saw while a fault was active and how fast
the service came back, from ``requests.parquet`` at 1 s resolution against the fault window
the stage record keeps (when the fault's start and stop completed, not the plan), and their
comparison between two runs with the same honesty rules as every other figure."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .metrics import outcomes
from .stats import ALPHA, _t_quantile, percentile, welch_log_ratio
from .store import Run, read_json

RESOLUTION_S = 1.0
STEADY_SECONDS = 3  # consecutive seconds meeting the SLO that count as "recovered"
MIN_REPEATS = 3  # a verdict needs this many repeats per arm, as everywhere else
# the variance of a time measured in whole seconds (uniform rounding error over 1 s)
_QUANTIZATION_VAR = RESOLUTION_S ** 2 / 12


@dataclass
class FaultFigures:
    """One faulted stage in one repeat. Times in seconds from the fault window's start
    (``time_to_first_error_s``) or end (``recovery_s``)."""

    fault: str
    stage: str
    repeat: int
    fault_started_at: str
    fault_stopped_at: str
    fault_s: float
    requests_during_fault: int
    # the requests in flight during the window (answered in it, or started before its end and
    # answered later): what users saw
    success_during_fault: float | None
    p95_during_fault_ms: float | None  # of all those requests, failures included
    failed_during_fault: int  # neither a success nor a 429
    time_to_first_error_s: float | None  # None: no request failed after the fault began
    recovery_s: float | None  # None: not recovered within the stage (see the lower bound)
    recovered: bool
    recovery_lower_bound_s: float | None  # when not recovered: observed this long without it
    failed_outside_fault: int  # requests that failed outside the fault window (and recovery)
    acknowledged_writes_lost: int | None  # None: the script does not count them
    writes_unverified: int | None  # answered 201, never read back (no answer to the re-read)


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def _epoch_s(frame: pl.DataFrame) -> np.ndarray:
    """Each request's end as seconds since the epoch."""
    return frame["timestamp"].dt.epoch("us").to_numpy() / 1e6


def _slo_met(frame: pl.DataFrame, ok: np.ndarray, p95_ms: float, success: float) -> bool:
    if frame.height == 0:
        return False
    share = float(ok.mean())
    if share < success or not ok.any():
        return False
    p95 = percentile(np.sort(frame["duration_ms"].to_numpy()[ok]), 0.95)
    return p95 is not None and p95 <= p95_ms


def stage_end(record: dict[str, Any]) -> dt.datetime | None:
    """The end of the stage's measured window."""
    start, measured = record.get("load_started_at"), record.get("measured_s")
    if start and measured is not None:
        return _ts(start) + dt.timedelta(seconds=float(measured))
    last = record.get("last_request_at")
    return _ts(last) if last else None


def fault_figures(run: Run, record: dict[str, Any], *, slo_p95_ms: float,
                  slo_success: float) -> FaultFigures | None:
    """The figures of one stage record with an injected fault, or None without one."""
    fault = record.get("fault") or {}
    if not (fault.get("injected") and fault.get("started_at") and fault.get("stopped_at")
            and record.get("requests_file")):
        return None
    begin, end = _ts(fault["started_at"]), _ts(fault["stopped_at"])
    frame = (pl.read_parquet(run.path / record["requests_file"])
             .filter(pl.col("stage") == record["key"]).sort("timestamp"))
    ok_all, limited_all, _ = outcomes(frame)
    failed_all = ~ok_all & ~limited_all
    stamps = _epoch_s(frame)
    begin_s, end_s = begin.timestamp(), end.timestamp()
    # in flight while the fault was active: a request answered in the window, or one that
    # started before its end and was answered later (hung on a frozen database, say)
    started = stamps - frame["duration_ms"].to_numpy() / 1000.0
    during = (stamps >= begin_s) & (started < end_s)
    inside = frame.filter(pl.Series(during))
    ok_in = ok_all[during]
    p95_in = percentile(np.sort(inside["duration_ms"].to_numpy()), 0.95) if inside.height \
        else None
    after_begin = np.flatnonzero(failed_all & (stamps >= begin_s))
    first_error = stamps[after_begin[0]] - begin_s if after_begin.size else None
    # recovery: whole seconds from the fault's end, the first of STEADY_SECONDS in a row
    # that each meet the SLO
    last_end = stage_end(record) or end
    seconds = int(math.floor((last_end - end).total_seconds() / RESOLUTION_S))
    offsets = stamps - end_s
    met: list[bool] = []
    for k in range(max(seconds, 0)):
        mask = (offsets >= k) & (offsets < k + 1)
        met.append(_slo_met(frame.filter(pl.Series(mask)), ok_all[mask], slo_p95_ms,
                            slo_success))
    recovery: float | None = None
    for k in range(len(met) - STEADY_SECONDS + 1):
        if all(met[k:k + STEADY_SECONDS]):
            recovery = float(k) * RESOLUTION_S
            break
    # outside the fault: before its start began (an immediate shutdown fails requests while
    # it runs), or after the recovery (after the fault's end when it never recovered)
    injected_s = _ts((fault.get("start") or {}).get("started_at") or fault["started_at"]) \
        .timestamp()
    outside = failed_all & ((stamps < injected_s) | (stamps >= end_s + (recovery or 0.0)))
    lost, unverified = _writes(run, record)
    return FaultFigures(
        fault=str(fault["name"]), stage=record["key"], repeat=int(record["repeat"]),
        fault_started_at=fault["started_at"], fault_stopped_at=fault["stopped_at"],
        fault_s=round((end - begin).total_seconds(), 3),
        requests_during_fault=int(inside.height),
        success_during_fault=float(ok_in.mean()) if inside.height else None,
        p95_during_fault_ms=p95_in,
        failed_during_fault=int(failed_all[during].sum()),
        time_to_first_error_s=round(float(first_error), 3) if first_error is not None else None,
        recovery_s=recovery, recovered=recovery is not None,
        recovery_lower_bound_s=None if recovery is not None else float(max(seconds, 0)),
        failed_outside_fault=int(outside.sum()),
        acknowledged_writes_lost=lost, writes_unverified=unverified)


def _writes(run: Run, record: dict[str, Any]) -> tuple[int | None, int | None]:
    """Acknowledged writes lost (a task answered 201 that read back 404) and writes never
    verified, from the journey script's counters in the stage's k6 summary; a stage split
    over several generators (--generators) sums its shards' summaries, and counts nothing
    when one of them is missing."""
    shards = record.get("shards")
    paths = [s.get("summary_file") for s in shards] if shards else [record.get("summary_file")]
    if not paths or any(not p or not (run.path / p).is_file() for p in paths):
        return None, None
    lost_total = pending_total = 0
    for path in paths:
        found = _summary_writes(run.path / str(path))
        if found is None:
            return None, None
        lost_total += found[0]
        pending_total += found[1]
    return lost_total, pending_total


def _summary_writes(path: Path) -> tuple[int, int] | None:
    metrics = (read_json(path, what="k6 summary").get("metrics") or {})

    def count(name: str) -> int | None:
        entry = metrics.get(name)
        if not isinstance(entry, dict):
            return None
        values = entry.get("values", entry)
        return int(values.get("count") or 0)

    lost = count("writes_lost")
    if lost is None:
        return None
    pending = (count("writes_unverified_added") or 0) - (count("writes_verified_late") or 0)
    return lost, max(pending, 0)


def run_figures(run: Run, *, slo_p95_ms: float, slo_success: float) -> list[FaultFigures]:
    figures = []
    for record in run.stages:
        found = fault_figures(run, record, slo_p95_ms=slo_p95_ms, slo_success=slo_success)
        if found is not None:
            figures.append(found)
    return figures


def faults_not_injected(run: Run) -> list[str]:
    """Why a planned fault left no window to measure, per stage and repeat."""
    notes = []
    for record in run.stages:
        fault = record.get("fault")
        if fault and not fault.get("injected"):
            notes.append(f"{run.label} {record['key']} repeat {record['repeat']}: fault "
                         f"{fault['name']} {fault.get('error') or fault.get('note') or 'not injected'}")
    return notes


# --- one arm's faulted stage over its repeats -------------------------------------------------

@dataclass
class ArmResilience:
    fault: str
    stage: str
    repeats: int
    fault_s: float | None  # mean window length
    success_during_fault: float | None
    p95_during_fault_ms: float | None
    failed_during_fault: float | None  # mean per repeat
    time_to_first_error_s: float | None
    recovery_s: float | None  # mean; None unless every repeat recovered
    recovered: bool  # every repeat recovered within its stage
    recovery_lower_bound_s: float | None  # mean of recoveries and lower bounds, when not
    acknowledged_writes_lost: int | None  # summed over repeats
    writes_unverified: int | None
    failed_outside_fault: int
    per_repeat: list[dict[str, Any]] = field(default_factory=list)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def arm_resilience(figures: list[FaultFigures]) -> list[ArmResilience]:
    groups: dict[tuple[str, str], list[FaultFigures]] = {}
    for f in figures:
        groups.setdefault((f.stage, f.fault), []).append(f)
    out = []
    for (stage, fault), items in groups.items():
        recovered = all(f.recovered for f in items)
        lost = [f.acknowledged_writes_lost for f in items]
        unverified = [f.writes_unverified for f in items]
        out.append(ArmResilience(
            fault=fault, stage=stage, repeats=len(items),
            fault_s=_mean([f.fault_s for f in items]),
            success_during_fault=_mean([f.success_during_fault for f in items]),
            p95_during_fault_ms=_mean([f.p95_during_fault_ms for f in items]),
            failed_during_fault=_mean([float(f.failed_during_fault) for f in items]),
            time_to_first_error_s=_mean([f.time_to_first_error_s for f in items]),
            recovery_s=_mean([f.recovery_s for f in items]) if recovered else None,
            recovered=recovered,
            recovery_lower_bound_s=None if recovered else _mean(
                [f.recovery_s if f.recovered else f.recovery_lower_bound_s for f in items]),
            acknowledged_writes_lost=None if any(v is None for v in lost)
            else int(sum(v for v in lost if v is not None)),
            writes_unverified=None if any(v is None for v in unverified)
            else int(sum(v for v in unverified if v is not None)),
            failed_outside_fault=sum(f.failed_outside_fault for f in items),
            per_repeat=[asdict(f) for f in items]))
    return out


# --- comparison -------------------------------------------------------------------------------

@dataclass
class ResilienceComparison:
    """One metric of a faulted stage, baseline against candidate. ``ratio`` is in the
    improvement direction (above 1 is better); ``difference`` is candidate minus baseline."""

    metric: str
    lower_is_better: bool
    baseline: float | None
    candidate: float | None
    ratio: float | None
    ratio_bound: str | None  # "at least": the baseline never recovered (a lower bound)
    difference: float | None
    ci95: tuple[float, float] | None  # of the difference (recovery, success) or the ratio (p95)
    ci95_of: str | None
    verdict: str
    reason: str | None


def _welch_difference(base: list[float], cand: list[float], floor_b: float,
                      floor_c: float) -> tuple[float, tuple[float, float] | None]:
    b, c = np.asarray(base, dtype=float), np.asarray(cand, dtype=float)
    diff = float(c.mean() - b.mean())
    var_b = max(float(b.var(ddof=1)), floor_b) / len(b)
    var_c = max(float(c.var(ddof=1)), floor_c) / len(c)
    se = math.sqrt(var_b + var_c)
    if se == 0:
        return diff, None
    df = (var_b + var_c) ** 2 / (var_b ** 2 / (len(b) - 1) + var_c ** 2 / (len(c) - 1))
    half = _t_quantile(1 - ALPHA / 2, df) * se
    return diff, (diff - half, diff + half)


def _difference_verdict(ci: tuple[float, float] | None, lower_is_better: bool) -> str:
    if ci is None:
        return "not comparable"
    better = ci[1] < 0 if lower_is_better else ci[0] > 0
    worse = ci[0] > 0 if lower_is_better else ci[1] < 0
    return "improved" if better else "regressed" if worse else "no significant change"


def _share_floor(figures: list[FaultFigures]) -> float:
    """Binomial sampling variance of one repeat's share (Agresti–Coull), a floor when the
    repeats agree more closely than their own sampling noise allows."""
    n = min((f.requests_during_fault for f in figures), default=0)
    p = _mean([f.success_during_fault for f in figures]) or 0.0
    adjusted = n + 4
    p_adj = (p * n + 2) / adjusted
    return p_adj * (1 - p_adj) / adjusted


def compare_metric(metric: str, base: list[FaultFigures], cand: list[FaultFigures],
                   arm_b: ArmResilience, arm_c: ArmResilience) -> ResilienceComparison:
    lower = metric != "success_during_fault"
    b_value, c_value = getattr(arm_b, metric), getattr(arm_c, metric)
    bound = None
    reason: str | None = None
    if metric == "recovery_s":
        if not arm_c.recovered:
            # a recovery that never happened is never "improved"
            return ResilienceComparison(
                metric, True, arm_b.recovery_s if arm_b.recovered else None, None, None, None,
                None, None, None,
                "regressed" if arm_b.recovered and len(base) >= MIN_REPEATS
                and len(cand) >= MIN_REPEATS and all(f.recovered for f in base)
                else "not comparable",
                "the candidate did not recover within the stage in "
                f"{sum(not f.recovered for f in cand)} of {len(cand)} repeats")
        if not arm_b.recovered:
            bound = "at least"
            b_value = arm_b.recovery_lower_bound_s
            reason = ("the baseline did not recover within the stage in "
                      f"{sum(not f.recovered for f in base)} of {len(base)} repeats: its "
                      "figure is a lower bound, so the ratio is too")
        b_values = [f.recovery_s if f.recovered else f.recovery_lower_bound_s for f in base]
        c_values = [f.recovery_s for f in cand]
    else:
        b_values = [getattr(f, metric) for f in base]
        c_values = [getattr(f, metric) for f in cand]
    ratio = None
    if b_value is not None and c_value is not None:
        num, den = (b_value, c_value) if lower else (c_value, b_value)
        if den > 0:
            ratio = num / den
        elif num == 0:
            ratio = 1.0
        else:
            reason = (reason + "; " if reason else "") + \
                "a value is zero, so no ratio exists"
    difference = c_value - b_value if b_value is not None and c_value is not None else None
    if any(v is None for v in b_values + c_values):
        return ResilienceComparison(metric, lower, b_value, c_value, ratio, bound, difference,
                                    None, None, "not comparable",
                                    "a repeat has no figure (no requests in the window)")
    if len(base) < MIN_REPEATS or len(cand) < MIN_REPEATS:
        return ResilienceComparison(
            metric, lower, b_value, c_value, ratio, bound, difference, None, None,
            "not replicated", f"a verdict needs {MIN_REPEATS} repeats per arm "
            f"(baseline {len(base)}, candidate {len(cand)})")
    bv = [float(v) for v in b_values if v is not None]
    cv = [float(v) for v in c_values if v is not None]
    if metric == "p95_during_fault_ms":
        if min(bv + cv) <= 0:
            return ResilienceComparison(metric, lower, b_value, c_value, ratio, bound,
                                        difference, None, None, "not comparable",
                                        "a p95 of 0 ms has no log")
        est = welch_log_ratio(bv, cv, lower_is_better=True)
        verdict = ("not comparable" if est.ci95 is None else "improved" if est.ci95[0] > 1
                   else "regressed" if est.ci95[1] < 1 else "no significant change")
        return ResilienceComparison(metric, lower, b_value, c_value, est.ratio, bound,
                                    difference, est.ci95, "ratio", verdict, reason)
    floor_b = floor_c = _QUANTIZATION_VAR
    if metric == "success_during_fault":
        floor_b, floor_c = _share_floor(base), _share_floor(cand)
    diff, ci = _welch_difference(bv, cv, floor_b, floor_c)
    verdict = _difference_verdict(ci, lower)
    if bound is not None and verdict == "regressed":
        verdict = "not comparable"  # a lower bound cannot show the candidate slower
    return ResilienceComparison(metric, lower, b_value, c_value, ratio, bound, diff, ci,
                                "difference", verdict, reason)


COMPARED = ("recovery_s", "success_during_fault", "p95_during_fault_ms")


def _arm_dict(arm: ArmResilience) -> dict[str, Any]:
    data = asdict(arm)
    return data


def _one_or_list(items: list[Any]) -> Any:
    return items[0] if len(items) == 1 else items


def compare_resilience(baseline: Run, candidate: Run, *, slo_p95_ms: float,
                       slo_success: float) -> dict[str, Any] | None:
    """``compare --format json``'s ``resilience``: each arm's faulted stages and their
    comparison, or None when neither run had a fault."""
    planned = [r for r in (baseline, candidate) if r.manifest.get("faults")
               or any(s.get("fault") for s in r.stages)]
    if not planned:
        return None
    b_fig = run_figures(baseline, slo_p95_ms=slo_p95_ms, slo_success=slo_success)
    c_fig = run_figures(candidate, slo_p95_ms=slo_p95_ms, slo_success=slo_success)
    b_arms = {(a.stage, a.fault): a for a in arm_resilience(b_fig)}
    c_arms = {(a.stage, a.fault): a for a in arm_resilience(c_fig)}
    comparisons = []
    for key in [k for k in b_arms if k in c_arms]:
        base = [f for f in b_fig if (f.stage, f.fault) == key]
        cand = [f for f in c_fig if (f.stage, f.fault) == key]
        metrics = {m: asdict(compare_metric(m, base, cand, b_arms[key], c_arms[key]))
                   for m in COMPARED}
        comparisons.append({"fault": key[1], "stage": key[0], "metrics": metrics})
    notes = faults_not_injected(baseline) + faults_not_injected(candidate)
    unmatched = sorted({f"{s} ({f})" for s, f in set(b_arms) ^ set(c_arms)})
    if unmatched:
        notes.append("faulted in one arm only, not compared: " + ", ".join(unmatched))
    return {
        "slo": {"p95_ms": slo_p95_ms, "success": slo_success},
        "resolution_s": RESOLUTION_S, "steady_seconds": STEADY_SECONDS,
        "baseline": _one_or_list([_arm_dict(a) for a in b_arms.values()]) if b_arms else None,
        "candidate": _one_or_list([_arm_dict(a) for a in c_arms.values()]) if c_arms else None,
        "comparison": _one_or_list(comparisons) if comparisons else None,
        "notes": notes,
    }


def timeline(run: Run, *, slo_p95_ms: float, slo_success: float) -> pl.DataFrame:
    """Per second from the fault's start (all faulted repeats of the run pooled, aligned on
    their fault windows): success share, p95 of all requests and the requests in it, with
    the mean fault window length. Columns: stage, fault, second, requests, success_share,
    p95_ms, fault_s."""
    rows: list[dict[str, Any]] = []
    for record in run.stages:
        fault = record.get("fault") or {}
        if not (fault.get("injected") and record.get("requests_file")):
            continue
        begin = _ts(fault["started_at"])
        frame = (pl.read_parquet(run.path / record["requests_file"])
                 .filter(pl.col("stage") == record["key"]))
        ok, _, _ = outcomes(frame)
        start = _ts(record["load_started_at"]) if record.get("load_started_at") else begin
        offset = _epoch_s(frame) - begin.timestamp()
        lead = (begin - start).total_seconds()
        rows.append({"stage": record["key"], "fault": fault["name"],
                     "offset": offset, "ok": ok, "duration": frame["duration_ms"].to_numpy(),
                     "lead": lead,
                     "fault_s": (_ts(fault["stopped_at"]) - begin).total_seconds()})
    out: list[dict[str, Any]] = []
    for (stage, name) in dict.fromkeys((r["stage"], r["fault"]) for r in rows):
        parts = [r for r in rows if (r["stage"], r["fault"]) == (stage, name)]
        offset = np.concatenate([p["offset"] for p in parts])
        ok = np.concatenate([p["ok"] for p in parts])
        duration = np.concatenate([p["duration"] for p in parts])
        seconds = np.floor(offset).astype(int)
        lead = int(math.ceil(min(p["lead"] for p in parts)))
        fault_s = float(np.mean([p["fault_s"] for p in parts]))
        for second in range(-lead, int(seconds.max()) + 1 if seconds.size else 0):
            mask = seconds == second
            n = int(mask.sum())
            out.append({"stage": stage, "fault": name, "second": second, "requests": n,
                        "success_share": float(ok[mask].mean()) if n else None,
                        "p95_ms": percentile(np.sort(duration[mask]), 0.95) if n else None,
                        "fault_s": fault_s})
    schema = {"stage": pl.String, "fault": pl.String, "second": pl.Int64,
              "requests": pl.Int64, "success_share": pl.Float64, "p95_ms": pl.Float64,
              "fault_s": pl.Float64}
    return pl.DataFrame(out, schema=schema)
