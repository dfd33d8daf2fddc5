"""Gatling's text ``simulation.log`` (Gatling 3.0 to 3.12; under ``target/gatling/<run>/``).

Tab-separated records, one per line: ``RUN`` (simulation, id, start, description, Gatling's
version), ``USER``, ``GROUP``, ``ERROR``, ``ASSERTION`` and ``REQUEST``. Only ``REQUEST``
records are read: ``REQUEST [userId] group name start end OK|KO message`` with epoch
milliseconds (the ``userId`` field was dropped in later 3.x versions; the width of the records
tells which). Gatling logs no HTTP status: ``OK``/``KO`` (its checks passed or not) is the
outcome, and the status is taken from a KO's message where Gatling names it (``... but
actually found 503``); otherwise the status is unknown (null), never guessed. A 429 named that
way is rate-limited; any other KO is an error. Gatling 3.13 and newer write a binary log,
refused with a message saying so; Gatling 2's text log (another layout) is refused too."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from ..errors import ImportFormatError
from .base import Converted, write

KIND = "gatling-log"
DESCRIPTION = "a Gatling 3.0-3.12 text simulation.log"
PER_REQUEST = True
_FOUND = r"found (\d{3})\b"


def detect(first_line: str) -> bool:
    # a text log opens with its RUN record, or with ASSERTION records when the simulation
    # has assertions
    fields = first_line.split("\t")
    return ((fields[0] == "RUN" and len(fields) >= 6 and fields[3].isdigit())
            or (fields[0] == "ASSERTION" and len(fields) == 2))


def refuse(path: Path, head: str) -> None:
    if len(head) > 6 and head[:4] == "\x00\x00\x00\x00" and 0 < ord(head[4]) < 32:
        version = head[5:5 + ord(head[4])]
        if re.fullmatch(r"\d+\.\d+(\.\d+)?(-[\w.]+)?", version):
            raise ImportFormatError(
                f"{path}: a binary simulation.log of Gatling {version}; Gatling 3.13 and newer "
                "write their log in a binary format that loadproof does not read. Import the "
                "text simulation.log of Gatling 3.12 or older", path=path)
    fields = head.split("\n", 1)[0].split("\t")
    if len(fields) >= 4 and fields[2] == "RUN" and fields[3].isdigit():
        raise ImportFormatError(
            f"{path}: a Gatling 2 simulation.log, whose layout loadproof does not read; it "
            "reads the text log of Gatling 3.0 to 3.12", path=path)


def _layout(path: Path) -> tuple[str, int]:
    """Gatling's version from the RUN record and the width of the REQUEST records."""
    version, width = "unknown", 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.rstrip("\r\n").split("\t")
            if fields[0] == "RUN" and len(fields) >= 6:
                version = fields[5].strip()
            elif fields[0] == "REQUEST":
                width = len(fields)
                break
    if width not in (7, 8):
        raise ImportFormatError(
            f"{path}: no REQUEST record of Gatling 3's layout (REQUEST, group, name, start, "
            "end, OK/KO, message); is this a whole text simulation.log of Gatling 3.0-3.12?",
            path=path)
    return version, width


def convert(path: Path, out: Path, *, repeat: int, stage: str) -> Converted:
    version, width = _layout(path)
    skip = width - 7  # 1 when the records carry a userId
    lines = pl.scan_csv(path, has_header=False, new_columns=["line"], separator="\x1f",
                        quote_char=None, schema_overrides={"line": pl.String},
                        infer_schema=False, encoding="utf8-lossy")
    field = pl.col("fields").list
    records = (lines.filter(pl.col("line").str.starts_with("REQUEST\t"))
               .select(pl.col("line").str.strip_chars_end("\r").str.split("\t").alias("fields")))
    try:
        start = field.get(3 + skip).cast(pl.Int64)
        end = field.get(4 + skip).cast(pl.Int64)
    except pl.exceptions.PolarsError as exc:  # pragma: no cover - polars is lazy here
        raise ImportFormatError(f"{path}: {exc}", path=path) from exc
    ok = field.get(5 + skip) == "OK"
    found = field.get(6 + skip, null_on_oob=True).str.extract(_FOUND, 1).cast(pl.Int32)
    requests = records.select(
        pl.from_epoch(end, time_unit="ms").dt.replace_time_zone("UTC")
        .dt.cast_time_unit("us").alias("timestamp"),
        (end - start).cast(pl.Float64).alias("duration_ms"),
        pl.when(ok).then(pl.lit(None, pl.Int32)).otherwise(found).alias("status"),
        ok.alias("expected"),
        field.get(2 + skip).alias("name"),
        pl.lit(None, pl.String).alias("method"),
        pl.lit(None, pl.Int32).alias("error_code"),
        pl.lit(stage).alias("stage"),
        pl.lit(repeat, pl.Int32).alias("repeat"),
    )
    rows, windows = write(requests, out, path)
    return Converted(rows, windows, 1e-3, notes=[
        f"Gatling {version} simulation.log: REQUEST records only (start and end in epoch "
        "ms); success is Gatling's OK (its checks passed); no HTTP status in the log, taken "
        "from a KO's message where Gatling names it ('found 503'), else unknown; no method"],
        extra={"gatling_version": version})
