"""What one k6 process's outputs say happened: each threshold and its result, whether k6
aborted the test on one, when the load really started and ended, and which hosts the
requests went to (the target a script hard-codes is not always ``--target``)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl

# printed by loadproof's wrappers and shipped scripts when setup ends, i.e. when k6 starts
# its scenarios: the origin of scenario startTimes and options.stages steps
START_MARKER = "loadproof:test-start"
_START = re.compile(START_MARKER + r" (\d+)")
# k6's message when a threshold with abortOnFail stops the test (k6 v1.1.0)
_ABORTED = re.compile(r"thresholds on metrics '([^']*)' were crossed; at least one has "
                      r"abortOnFail enabled, stopping test prematurely")


def scenarios_started_at(log_text: str) -> dt.datetime | None:
    """When k6 started the scenarios (UTC), from the marker in k6's log."""
    match = _START.search(log_text)
    if not match:
        return None
    return dt.datetime.fromtimestamp(int(match.group(1)) / 1000, dt.UTC)


def aborted_on(log_text: str) -> list[str] | None:
    """The metrics whose abortOnFail threshold stopped the test, or None when k6 did not
    abort on a threshold."""
    match = _ABORTED.search(log_text)
    if not match:
        return None
    return [name.strip() for name in match.group(1).split(",") if name.strip()]


def threshold_results(summary: dict[str, Any],
                      declared: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every threshold in a k6 summary with its result: ``ok`` is True when it held.

    handleSummary data carries ``{"expr": {"ok": bool}}``; the legacy ``--summary-export``
    carries ``{"expr": bool}`` where true means the threshold was crossed (checked against
    k6 v1.1.0). ``declared`` (the script's options.thresholds) adds abortOnFail."""
    abort_on_fail: dict[tuple[str, str], bool] = {}
    for metric, rules in (declared or {}).items():
        for rule in rules or []:
            if isinstance(rule, dict) and rule.get("threshold"):
                abort_on_fail[(metric, str(rule["threshold"]))] = bool(rule.get("abortOnFail"))
    results = []
    for metric, entry in (summary.get("metrics") or {}).items():
        if not isinstance(entry, dict):
            continue
        for expr, result in (entry.get("thresholds") or {}).items():
            if isinstance(result, dict):
                ok = result.get("ok")
            elif isinstance(result, bool):
                ok = not result
            else:
                ok = None
            results.append({"metric": metric, "threshold": expr,
                            "ok": None if ok is None else bool(ok),
                            "abort_on_fail": abort_on_fail.get((metric, expr), False)})
    return results


def host_port(url: str) -> str | None:
    """'host:port' of a URL, the port made explicit (80 for http, 443 for https)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.scheme not in ("http", "https"):
        return None
    port = port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


def hosts_hit(csv_path: Path) -> dict[str, int] | None:
    """Requests per 'host:port' from the ``url`` column of k6's raw CSV (warm-up included:
    it went somewhere too), or None when the script's systemTags leave ``url`` out."""
    frame = pl.scan_csv(csv_path, infer_schema=False, low_memory=True)
    if "url" not in frame.collect_schema().names():
        return None
    urls = (frame.filter(pl.col("metric_name") == "http_reqs")
            .group_by("url").agg(pl.len().alias("n")).collect())
    counts: dict[str, int] = {}
    for url, n in urls.iter_rows():
        key = host_port(url or "") or "(no URL)"
        counts[key] = counts.get(key, 0) + int(n)
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def vus_observed(csv_path: Path, start: dt.datetime | None,
                 end: dt.datetime | None) -> int | None:
    """The most VUs k6 reported (its ``vus`` metric, sampled about once a second across the
    whole test) between ``start`` and ``end``."""
    frame = pl.scan_csv(csv_path, infer_schema=False, low_memory=True)
    frame = frame.filter(pl.col("metric_name") == "vus").select(
        pl.from_epoch(pl.col("timestamp").cast(pl.Int64), time_unit="us")
        .dt.replace_time_zone("UTC").alias("t"),
        pl.col("metric_value").cast(pl.Float64).alias("v"))
    if start is not None:
        frame = frame.filter(pl.col("t") >= start)
    if end is not None:
        frame = frame.filter(pl.col("t") <= end)
    value = frame.select(pl.col("v").max()).collect().item()
    return int(value) if value is not None else None


def threshold_lines(stage_records: list[dict[str, Any]]) -> list[str]:
    """One line per stage and threshold of a run's stage records: whether it held (in how
    many repeats), and whether k6 aborted the stage on it. Empty when the script had none."""
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    aborted: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for record in stage_records:
        # a script-driven run's thresholds are the whole test's, shared by its stages
        whole_test = record.get("threshold_scope") == "test"
        key = "whole test" if whole_test else record["key"]
        if (key, record.get("dir", "")) in seen:
            continue
        seen.add((key, record.get("dir", "")))
        for item in record.get("threshold_results") or []:
            results.setdefault((key, item["metric"], item["threshold"]), []).append(item)
        if record.get("status") == "aborted":
            aborted.setdefault(key, []).extend(record.get("aborted_on") or [])
    lines = []
    order = {key: i for i, key in enumerate(dict.fromkeys(k for k, _, _ in results))}
    for (key, metric, threshold), items in sorted(results.items(),
                                                  key=lambda kv: (order[kv[0][0]], kv[0][1:])):
        held = sum(1 for i in items if i["ok"] is True)
        verdict = ("held" if held == len(items) else "crossed" if held == 0
                   else f"held in {held} of {len(items)} repeats")
        if len(items) > 1 and held in (0, len(items)):
            verdict += f" (all {len(items)} repeats)"
        line = f"{key}: {metric} {threshold}: {verdict}"
        if items[0].get("abort_on_fail"):
            line += (" — k6 aborted the stage on it (abortOnFail)"
                     if metric in aborted.get(key, []) else " (abortOnFail)")
        lines.append(line)
    return lines
