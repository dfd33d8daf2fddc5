"""hey's per-request CSV (``hey -o csv URL > results.csv``).

Columns ``response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,
status-code,offset``, times in seconds. ``offset`` is when the request started, counted from
the start of the test: hey records no clock time, so the absolute start is estimated as the
file's modification time (hey writes the file when the test ends) minus the test's span, and
the stage record says so. hey leaves requests that got no answer out of this CSV (it counts
them only in its text summary): their errors cannot be imported, and error shares are of
the answered requests. Outcome classes from the status: 2xx-3xx success, 429 rate-limited,
anything else an error."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from .base import Converted, header, require, write

KIND = "hey-csv"
DESCRIPTION = "a hey CSV (hey -o csv URL > results.csv)"
PER_REQUEST = True
HEADER = "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset"
NEEDED = ("response-time", "status-code", "offset")


def detect(first_line: str) -> bool:
    return first_line.strip() == HEADER


def convert(path: Path, out: Path, *, repeat: int, stage: str) -> Converted:
    require(path, header(path), NEEDED, "hey CSV")
    frame = pl.scan_csv(path, schema_overrides={"response-time": pl.Float64,
                                                "offset": pl.Float64, "status-code": pl.Int32},
                        infer_schema=False)
    span = frame.select((pl.col("offset") + pl.col("response-time")).max()).collect().item()
    written = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    origin = written - dt.timedelta(seconds=float(span or 0.0))
    end_us = ((pl.col("offset") + pl.col("response-time")) * 1e6).round().cast(pl.Int64)
    requests = frame.select(
        (pl.lit(origin).dt.cast_time_unit("us") + pl.duration(microseconds=end_us))
        .alias("timestamp"),
        (pl.col("response-time") * 1000).alias("duration_ms"),
        pl.col("status-code").fill_null(0).alias("status"),
        pl.lit(None, pl.Boolean).alias("expected"),
        pl.lit(None, pl.String).alias("name"),
        pl.lit(None, pl.String).alias("method"),
        pl.lit(None, pl.Int32).alias("error_code"),
        pl.lit(stage).alias("stage"),
        pl.lit(repeat, pl.Int32).alias("repeat"),
    )
    rows, windows = write(requests, out, path)
    return Converted(rows, windows, 1e-4, notes=[
        "hey CSV: times relative to the test's start; absolute start estimated from the "
        "file's modification time minus the test's span",
        "hey CSV: requests that got no answer are not in the file (hey only counts them in "
        "its text summary), so errors without a response are missing"],
        extra={"time_origin": "file mtime minus span", "time_origin_utc": origin.isoformat()})
