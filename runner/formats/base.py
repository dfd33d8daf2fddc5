"""What the per-format importers share: the result of a conversion and the parquet writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import ImportFormatError
from ..ingest import REQUEST_SCHEMA, sink_atomically


@dataclass
class Converted:
    """What converting one per-request file gave: its row count, its load window (unix
    seconds) and resolution, and facts about the file a reader must know."""

    rows: int
    windows: dict[str, tuple[float, float]]  # per stage key
    time_resolution_s: float
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # kept in the stage record


def header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        return [c.strip() for c in handle.readline().rstrip("\r\n").split(",")]


def require(path: Path, columns: list[str], needed: tuple[str, ...], tool: str) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ImportFormatError(
            f"{path}: this {tool} file has no {', '.join(missing)} column(s); loadproof needs "
            f"{', '.join(needed)}", path=path)


def write(frame: pl.LazyFrame, out: Path, path: Path
          ) -> tuple[int, dict[str, tuple[float, float]]]:
    """Stream ``frame`` (REQUEST_SCHEMA's columns, ``timestamp`` the end of each request) to
    ``out``; return the row count and each stage's load window, from the earliest request
    start to the latest end (unix seconds), read back from the parquet's columns."""
    try:
        sink_atomically(frame.select(list(REQUEST_SCHEMA)).cast(REQUEST_SCHEMA), out)
    except pl.exceptions.PolarsError as exc:
        raise ImportFormatError(f"{path}: cannot be read as its header says ({exc})",
                                path=path) from exc
    end = pl.col("timestamp").dt.epoch("us").cast(pl.Float64) / 1e6
    found = (pl.scan_parquet(out).group_by("stage")
             .agg(pl.len().alias("rows"),
                  (end - pl.col("duration_ms") / 1000).min().alias("start"),
                  end.max().alias("end")).collect())
    windows = {row["stage"]: (float(row["start"]), float(row["end"]))
               for row in found.iter_rows(named=True)}
    return int(found["rows"].sum()), windows
