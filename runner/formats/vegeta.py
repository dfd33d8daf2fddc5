"""vegeta's CSV results (``vegeta attack ... | vegeta encode --to csv > results.csv``).

No header line. Columns by position, as vegeta's ``NewCSVEncoder`` writes them: the request's
start (unix nanoseconds), HTTP status (0 when no answer came), latency (ns), bytes out, bytes
in, error text, body (base64), and since vegeta 8 the attack's name and sequence number, since
12.8 the method and URL, then the response headers (base64). Read: start, status, latency,
and method and URL where present. Each request's timestamp is its start plus its latency
(the end, as k6 stamps its requests), cut to the microsecond loadproof stores. Outcome classes
from the status, as vegeta counts successes: 2xx-3xx success, 429 rate-limited, anything else
(0 included: refused, timed out) an error."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import polars as pl

from ..errors import ImportFormatError
from .base import Converted, write

KIND = "vegeta-csv"
DESCRIPTION = "a vegeta CSV (vegeta attack ... | vegeta encode --to csv > results.csv)"
PER_REQUEST = True
OPEN_MODEL = True  # vegeta attacks at a set rate: --stages names requests per second
_WIDTHS = (7, 9, 11, 12)  # vegeta < 8, 8 to 12.7, 12.8 (method, url), later (headers)
_NUMBER = re.compile(r"^\d+$")


def _fields(first_line: str) -> list[str] | None:
    try:
        return next(csv.reader([first_line]))
    except (csv.Error, StopIteration):
        return None


def detect(first_line: str) -> bool:
    fields = _fields(first_line)
    if not fields or len(fields) not in _WIDTHS:
        return False
    start, code, latency, out, in_ = fields[:5]
    return (len(start) == 19 and all(_NUMBER.match(v) for v in (start, code, latency, out, in_))
            and len(code) <= 3)


def convert(path: Path, out: Path, *, repeat: int, stage: str) -> Converted:
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        width = len(_fields(handle.readline()) or [])
    names = [f"c{i}" for i in range(width)]
    frame = pl.scan_csv(path, has_header=False, new_columns=names,
                        schema_overrides={"c0": pl.Int64, "c1": pl.Int32, "c2": pl.Int64},
                        infer_schema=False, encoding="utf8-lossy")
    end_us = (pl.col("c0") + pl.col("c2")) // 1000
    requests = frame.select(
        pl.from_epoch(end_us, time_unit="us").dt.replace_time_zone("UTC").alias("timestamp"),
        # numpy's division: polars multiplies by 1e-6, a last bit off a true ns / 1e6
        pl.col("c2").map_batches(lambda ns: pl.Series(ns.cast(pl.Float64).to_numpy() / 1e6),
                                 return_dtype=pl.Float64).alias("duration_ms"),
        pl.col("c1").alias("status"),
        pl.lit(None, pl.Boolean).alias("expected"),
        (pl.col("c10") if width >= 11 else pl.lit(None, pl.String)).alias("name"),
        (pl.col("c9") if width >= 11 else pl.lit(None, pl.String)).alias("method"),
        pl.lit(None, pl.Int32).alias("error_code"),
        pl.lit(stage).alias("stage"),
        pl.lit(repeat, pl.Int32).alias("repeat"),
    )
    rows, windows = write(requests, out, path)
    if rows == 0:
        raise ImportFormatError(f"{path}: this vegeta CSV holds no requests", path=path)
    notes = ["vegeta CSV: timestamp = start (ns) + latency, cut to microseconds; status 0 "
             "(no answer: refused, timed out) is an error; success from the status"]
    if width < 11:
        notes.append("vegeta CSV from before vegeta 12.8: no method or URL in the file")
    return Converted(rows, windows, 1e-6, notes=notes)
