"""Locust's CSV files (``locust --headless --csv PREFIX``): ``PREFIX_stats.csv`` and
``PREFIX_stats_history.csv``.

Locust keeps no per-request rows, only aggregates, so an import is summary-only, as for a k6
summary: its counts, rate and percentiles, and no interval. ``_stats.csv``'s ``Aggregated``
row gives the figures; Locust's percentiles are of every request (failures included) and
rounded to its response-time buckets. Locust counts a 429 as a failure like any non-2xx/3xx
answer, so rate-limited requests are among the errors. ``_stats_history.csv`` (a row per
interval of the running totals) is kept beside it as the timeline when given."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import ImportFormatError


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _number(path: Path, row: dict[str, str], column: str) -> float | None:
    value = (row.get(column) or "").strip()
    if value in ("", "N/A"):
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise ImportFormatError(f"{path}: column {column!r} holds {value!r}, not a number",
                                path=path) from exc


class Stats:
    KIND = "locust-stats"
    DESCRIPTION = "Locust's PREFIX_stats.csv (locust --headless --csv PREFIX)"
    PER_REQUEST = False
    HEADER = "Type,Name,Request Count,Failure Count,Median Response Time"

    @classmethod
    def detect(cls, first_line: str) -> bool:
        return first_line.startswith(cls.HEADER)

    @staticmethod
    def summary(path: Path) -> dict[str, Any]:
        """The Aggregated row as a summary in k6's handleSummary shape, which the
        summary-only reading of loadproof understands; ``source`` says where it came from."""
        _columns, rows = _read_rows(path)
        total = [r for r in rows if (r.get("Name") or "").strip() == "Aggregated"]
        if len(total) != 1:
            raise ImportFormatError(f"{path}: no single 'Aggregated' row; is this a whole "
                                    "Locust _stats.csv?", path=path)
        row = total[0]
        count = int(_number(path, row, "Request Count") or 0)
        failures = int(_number(path, row, "Failure Count") or 0)
        if count == 0:
            raise ImportFormatError(f"{path}: Locust recorded no requests", path=path)
        rate = _number(path, row, "Requests/s")
        latency: dict[str, Any] = {
            "med": _number(path, row, "50%"), "p(90)": _number(path, row, "90%"),
            "p(95)": _number(path, row, "95%"), "p(99)": _number(path, row, "99%"),
            "max": _number(path, row, "Max Response Time"),
            "min": _number(path, row, "Min Response Time"),
            "avg": _number(path, row, "Average Response Time"),
        }
        metrics: dict[str, Any] = {
            "http_reqs": {"type": "counter", "values": {"count": count, "rate": rate}},
            "http_req_failed": {"type": "rate", "values": {"rate": failures / count}},
            "http_req_duration": {"type": "trend", "values": latency},
        }
        if failures == 0:  # every request a success: the percentiles of successes are these
            metrics["http_req_duration{expected_response:true}"] = {
                "type": "trend", "values": {**latency, "count": count}}
        return {"source": "locust _stats.csv (Aggregated row), converted by loadproof",
                "root_group": {}, "metrics": metrics}


class History:
    KIND = "locust-history"
    DESCRIPTION = "Locust's PREFIX_stats_history.csv (with its _stats.csv)"
    PER_REQUEST = False
    HEADER = "Timestamp,User Count,Type,Name,Requests/s,Failures/s"

    @classmethod
    def detect(cls, first_line: str) -> bool:
        return first_line.startswith(cls.HEADER)

    @staticmethod
    def refuse(path: Path, head: str) -> None:
        first = head.lstrip("\ufeff").split("\n", 1)[0]
        if first.startswith(("Method,Name,Error,Occurrences", "Count,Message,Traceback")):
            raise ImportFormatError(
                f"{path}: Locust's failures or exceptions CSV holds no timings; import "
                "PREFIX_stats.csv (and PREFIX_stats_history.csv) instead", path=path)


_TIMELINE = {"Requests/s": "requests_per_s", "Failures/s": "failures_per_s", "50%": "p50_ms",
             "95%": "p95_ms", "99%": "p99_ms", "Total Request Count": "total_requests",
             "Total Failure Count": "total_failures"}


def timeline(path: Path) -> pl.DataFrame:
    """The ``Aggregated`` rows of a ``_stats_history.csv`` as a time series: ``timestamp``
    (UTC, from Locust's unix seconds), ``users``, the rates Locust printed at that moment
    (``requests_per_s``, ``failures_per_s``), its percentiles of recent requests, failures
    included (``p50_ms``, ``p95_ms``, ``p99_ms``; null where Locust wrote N/A) and its running
    totals. Locust writes a row every few seconds (``CSV_STATS_INTERVAL_SEC``)."""
    columns, rows = _read_rows(path)
    needed = ("Timestamp", "User Count", "Name", *_TIMELINE)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ImportFormatError(f"{path}: this Locust _stats_history.csv has no "
                                f"{', '.join(missing)} column(s)", path=path)
    total = [r for r in rows if (r.get("Name") or "").strip() == "Aggregated"]
    if not total:
        raise ImportFormatError(f"{path}: no 'Aggregated' rows; is this a whole Locust "
                                "_stats_history.csv?", path=path)
    frame = pl.DataFrame({
        "timestamp": [_number(path, r, "Timestamp") for r in total],
        "users": [_number(path, r, "User Count") for r in total],
        **{name: [_number(path, r, column) for r in total] for column, name in _TIMELINE.items()},
    }, schema_overrides={"timestamp": pl.Float64})
    return frame.with_columns(
        pl.from_epoch((pl.col("timestamp") * 1e6).round().cast(pl.Int64), time_unit="us")
        .dt.replace_time_zone("UTC").alias("timestamp"),
        pl.col("users", "total_requests", "total_failures").cast(pl.Int64))
