"""JMeter's CSV results (a JTL file: ``jmeter -n -t plan.jmx -l results.jtl``).

One row per sample, with a header line of JMeter's field names (JMeter's default since 2.x;
``jmeter.save.saveservice.print_field_names``). Read by name, so optional columns may be
missing or reordered: ``timeStamp`` (epoch milliseconds; the sample's start, JMeter's default
``sampleresult.timestamp.start=true``), ``elapsed`` (ms), ``label``, ``responseCode``,
``success``. Outcome classes: a numeric 429 is rate-limited; ``success=true`` is a success;
anything else is an error. JMeter writes the exception's name as the response code when no
answer came (``Non HTTP response code: java.net.ConnectException``): such rows get status 0."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

from ..errors import ImportFormatError
from .base import Converted, header, require, write

KIND = "jmeter-jtl"
DESCRIPTION = "a JMeter CSV results file (jmeter -n -t PLAN -l results.jtl, with its header)"
PER_REQUEST = True
NEEDED = ("timeStamp", "elapsed", "responseCode", "success")
_COLUMNS = {"timeStamp": pl.Int64, "elapsed": pl.Float64, "label": pl.String,
            "responseCode": pl.String, "success": pl.String, "URL": pl.String}


def detect(first_line: str) -> bool:
    columns = first_line.split(",")
    return "timeStamp" in columns and "elapsed" in columns


def refuse(path: Path, head: str) -> None:
    text = head.lstrip("\ufeff").lstrip()
    if text.startswith("<?xml") and "<testResults" in text[:2000]:
        raise ImportFormatError(
            f"{path}: a JMeter JTL in XML, which loadproof does not read; save the results as "
            "CSV (jmeter.save.saveservice.output_format=csv, JMeter's default) with the "
            "header line", path=path)
    first = text.split("\n", 1)[0]
    if "timeStamp\telapsed" in first:
        raise ImportFormatError(
            f"{path}: a tab-separated JMeter JTL; loadproof reads JMeter's default comma "
            "(jmeter.save.saveservice.default_delimiter=,)", path=path)
    fields = first.split(",")
    if len(fields) >= 8 and fields[0].isdigit() and len(fields[0]) == 13 \
            and fields[7] in ("true", "false"):
        raise ImportFormatError(
            f"{path}: looks like a JMeter CSV without its header line; loadproof reads "
            "columns by name: save with jmeter.save.saveservice.print_field_names=true",
            path=path)


def plateaus(frame: pl.LazyFrame) -> pl.DataFrame:
    """The load levels of a JTL from its ``allThreads`` column: in time order, each level's
    longest unbroken run of samples is its stage (``s<i>-<threads>vus``, numbered by start);
    samples at that level elsewhere (threads starting or stopping on the way to another
    level) are left out. One row per run of samples: its first and last timeStamp, whether
    it is kept, and its stage key."""
    runs = (frame.select("timeStamp", "allThreads").sort("timeStamp", maintain_order=True)
            .with_columns((pl.col("allThreads") != pl.col("allThreads").shift())
                          .fill_null(True).cum_sum().alias("run"))
            .group_by("run").agg(pl.col("allThreads").first().alias("threads"),
                                 pl.len().alias("n"), pl.col("timeStamp").min().alias("first"),
                                 pl.col("timeStamp").max().alias("last"))
            .sort("run").collect())
    best = runs.sort(["n", "run"], descending=[True, False]).unique("threads", keep="first")
    kept = best.sort("first").with_row_index("index", offset=1).select(
        "run", (pl.lit("s") + pl.col("index").cast(pl.String) + pl.lit("-")
                + pl.col("threads").cast(pl.String) + pl.lit("vus")).alias("stage"))
    return runs.join(kept, on="run", how="left")


def _check_epoch_ms(path: Path, columns: list[str]) -> None:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        rows = csv.reader(handle)
        next(rows, None)
        first = next(rows, None)
    value = first[columns.index("timeStamp")] if first else ""
    if first and not (value.isdigit() and len(value) == 13):
        raise ImportFormatError(
            f"{path}: timeStamp {value!r} is not epoch milliseconds; save JMeter's results "
            "with jmeter.save.saveservice.timestamp_format=ms (its default)", path=path)


def convert(path: Path, out: Path, *, repeat: int, stage: str,
            stage_by: str | None = None) -> Converted:
    columns = header(path)
    require(path, columns, NEEDED + ((stage_by,) if stage_by else ()), "JMeter JTL")
    _check_epoch_ms(path, columns)
    types = {**_COLUMNS, **({stage_by: pl.Int64} if stage_by else {})}
    frame = pl.scan_csv(path, schema_overrides={k: v for k, v in types.items() if k in columns},
                        infer_schema=False, low_memory=True, encoding="utf8-lossy")
    notes = ["JMeter JTL: timeStamp read as the sample's start (JMeter's default), elapsed "
             "as its duration; success from JMeter's success column; no HTTP method in the file"]
    stage_expr: pl.Expr = pl.lit(stage)
    if stage_by is not None:
        try:
            runs = plateaus(frame.rename({stage_by: "allThreads"}) if stage_by != "allThreads"
                            else frame)
        except pl.exceptions.PolarsError as exc:
            raise ImportFormatError(f"{path}: column {stage_by!r} is not a whole number of "
                                    f"threads ({exc})", path=path) from exc
        left_out = int(runs.filter(pl.col("stage").is_null())["n"].sum())
        notes.append(f"stages from {stage_by}: each level's longest unbroken run of samples; "
                     f"{left_out} sample(s) at a level outside its run left out")
        bounds = runs.drop_nulls("stage").sort("first")
        stage_expr = pl.lit(None, pl.String)
        for row in bounds.iter_rows(named=True):
            stage_expr = (pl.when(pl.col("timeStamp").is_between(row["first"], row["last"])
                                  & (pl.col(stage_by) == row["threads"]))
                          .then(pl.lit(row["stage"])).otherwise(stage_expr))
        frame = frame.filter(stage_expr.is_not_null())
    code = pl.col("responseCode").str.strip_chars()
    status = code.cast(pl.Int32, strict=False).fill_null(0)
    start = pl.from_epoch(pl.col("timeStamp"), time_unit="ms").dt.replace_time_zone("UTC")
    name = pl.col("label") if "label" in columns else pl.lit(None, pl.String)
    requests = frame.select(
        # the end of the sample, as k6 stamps its requests
        (start.dt.cast_time_unit("us")
         + pl.duration(microseconds=(pl.col("elapsed") * 1000).cast(pl.Int64))
         ).alias("timestamp"),
        pl.col("elapsed").alias("duration_ms"),
        status.alias("status"),
        (pl.col("success").str.to_lowercase() == "true").alias("expected"),
        name.alias("name"),
        pl.lit(None, pl.String).alias("method"),
        pl.lit(None, pl.Int32).alias("error_code"),
        stage_expr.alias("stage"),
        pl.lit(repeat, pl.Int32).alias("repeat"),
    )
    rows, windows = write(requests, out, path)
    return Converted(rows, windows, 1e-3, notes=notes)
