"""k6 outputs -> the run store: raw CSV to requests.parquet in a streaming way, and
``import`` of files a user already has (summary JSON, raw CSV or NDJSON, gzipped or not)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import polars as pl

from .errors import ImportFormatError
from .store import FILE_MODE

if TYPE_CHECKING:
    import pyarrow as pa  # imported where used: it costs start-up time `import` does not need

# The stable columns of requests.parquet.
REQUEST_SCHEMA = pl.Schema({
    "timestamp": pl.Datetime("us", "UTC"),  # when k6 recorded the response (UTC)
    "duration_ms": pl.Float64(),  # http_req_duration: sending + waiting + receiving
    "status": pl.Int32(),  # HTTP status; 0 when no answer came
    # k6's expected_response (its responseCallback: 2xx/3xx by default, and 429 in shipped
    # scripts); null when the script's systemTags left the tag out
    "expected": pl.Boolean(),
    "name": pl.String(),  # the request's name tag (URL or a template such as POST /task)
    "method": pl.String(),
    "error_code": pl.Int32(),  # k6 error code, 0 when none
    "stage": pl.String(),  # stage key, e.g. s2-50vus
    "repeat": pl.Int32(),  # 1-based repeat of the plan
})
REQUEST_COLUMNS = list(REQUEST_SCHEMA)

# k6 CSV columns we read; everything else is left as text and dropped.
_CSV_TYPES = {
    "metric_name": pl.String,
    "timestamp": pl.String,  # unix s/ms/us/ns or RFC 3339, per K6_CSV_TIME_FORMAT
    "metric_value": pl.Float64,
    "error_code": pl.Int32,
    "expected_response": pl.String,
    "method": pl.String,
    "name": pl.String,
    "scenario": pl.String,
    "status": pl.Int32,
    "extra_tags": pl.String,
}
CSV_HEADER_PREFIX = "metric_name,timestamp,metric_value"
# How CSV timestamps are read, after K6_CSV_TIME_FORMAT: unix (k6 v1.1.0's default, whole
# seconds) is "s", unix_milli "ms", unix_micro "us", unix_nano "ns" (kept to the µs), and
# rfc3339, which k6 also writes to the second, with the machine's UTC offset.
TimeFormat = Literal["s", "ms", "us", "ns", "rfc3339"]
# the finest step a time format can tell apart, in seconds
TIME_RESOLUTION_S: dict[str, float] = {"s": 1.0, "rfc3339": 1.0, "ms": 1e-3, "us": 1e-6,
                                       "ns": 1e-6}  # stored as microseconds
_STAGE_TAG = r"(?:^|&)stage=([^&]+)"
# the stage keys of loadproof-driven stages (s2-50vus, s3-750rps): only their scenario named
# "warmup" is loadproof's own warm-up
LOADPROOF_STAGE_KEY = r"^s\d+-\d+(?:vus|rps)$"
# Tags loadproof cannot do without: the outcome classes (success, 429, error) need the status.
REQUIRED_TAGS = ("status",)


def missing_tag_error(path: Path, tag: str) -> ImportFormatError:
    return ImportFormatError(
        f"{path}: k6 recorded no {tag!r} tag on its requests (the script's systemTags, or "
        f"--system-tags, leave it out), so successes, 429s and errors cannot be told apart; "
        f"add {tag!r} to systemTags (or remove the systemTags option) and run the test again",
        path=path)


def csv_columns(csv_path: Path) -> list[str]:
    with _open_text(csv_path) as handle:  # plain or gzipped
        return handle.readline().strip().split(",")


def _timestamp_expr(unit: TimeFormat) -> pl.Expr:
    if unit == "rfc3339":
        return (pl.col("timestamp").str.replace(r"Z$", "+00:00")
                .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", time_unit="us")
                .dt.convert_time_zone("UTC"))
    return pl.from_epoch(pl.col("timestamp").cast(pl.Int64), time_unit=unit) \
        .dt.replace_time_zone("UTC").dt.cast_time_unit("us")


def _csv_stage_and_filter(csv_path: Path, frame: pl.LazyFrame, columns: list[str],
                          stage: str | None) -> tuple[pl.Expr, pl.Expr]:
    """The stage of each row and which rows count (not loadproof's warm-up).

    With ``stage`` given (a stage run by loadproof) every row is that stage and a scenario
    named ``warmup`` is loadproof's warm-up. Imported files (``stage=None``) take the stage
    from loadproof's ``stage`` tag; rows without it are one stage, or one per scenario when
    the test had several. A ``warmup`` scenario is dropped only from rows loadproof tagged:
    a user's own scenario of that name is a stage like any other (so is one a script-driven
    run tagged with a stage of its own, such as ``s1-warmup``)."""
    scenario = pl.col("scenario") if "scenario" in columns else pl.lit(None, pl.String)
    is_warmup = scenario.fill_null("") == "warmup"
    if stage is not None:
        return pl.lit(stage), ~is_warmup
    tag = (pl.col("extra_tags").str.extract(_STAGE_TAG) if "extra_tags" in columns
           else pl.lit(None, pl.String))
    untagged = frame.filter((pl.col("metric_name") == "http_req_duration") & tag.is_null())
    scenarios = (untagged.select(scenario.unique()).collect().to_series().drop_nulls().to_list()
                 if "scenario" in columns else [])
    fallback = scenario.fill_null("imported") if len(scenarios) > 1 else pl.lit("imported")
    ours = tag.fill_null("").str.contains(LOADPROOF_STAGE_KEY)
    return tag.fill_null(fallback), ~(ours & is_warmup)


def requests_from_csv(csv_path: Path, *, stage: str | None, repeat: int,
                      time_unit: TimeFormat = "us") -> pl.LazyFrame:
    """A lazy frame of request rows from a k6 CSV file, warm-up excluded.

    ``stage=None`` takes the stage from the ``stage=`` tag in extra_tags (imported files).
    Columns a script's systemTags left out are filled in (``expected`` as null, so that
    success falls back to the status) except ``status``, which is refused."""
    columns = csv_columns(csv_path)
    for tag in REQUIRED_TAGS:
        if tag not in columns:
            raise missing_tag_error(csv_path, tag)
    frame = pl.scan_csv(csv_path, schema_overrides=_CSV_TYPES, infer_schema=False,
                        low_memory=True)
    stage_expr, keep = _csv_stage_and_filter(csv_path, frame, columns, stage)

    def column(name: str, dtype: pl.DataType) -> pl.Expr:
        return pl.col(name) if name in columns else pl.lit(None, dtype)

    expected = (pl.col("expected_response") == "true" if "expected_response" in columns
                else pl.lit(None, pl.Boolean))
    frame = frame.filter((pl.col("metric_name") == "http_req_duration") & keep)
    return frame.select(
        _timestamp_expr(time_unit).alias("timestamp"),
        pl.col("metric_value").alias("duration_ms"),
        pl.col("status").fill_null(0).cast(pl.Int32).alias("status"),
        expected.alias("expected"),
        column("name", pl.String()).cast(pl.String).alias("name"),
        column("method", pl.String()).cast(pl.String).alias("method"),
        column("error_code", pl.Int32()).fill_null(0).cast(pl.Int32).alias("error_code"),
        stage_expr.cast(pl.String).alias("stage"),
        pl.lit(repeat, dtype=pl.Int32).alias("repeat"),
    )


def csv_windows(csv_path: Path, *, stage: str | None,
                time_unit: TimeFormat = "us") -> dict[str, tuple[float, float]]:
    """Per stage, the load window in unix seconds: from the earliest start of a request or an
    iteration (its end time minus its duration) to the latest end. Only as fine as the file's
    timestamps (whole seconds by default in k6's CSV)."""
    columns = csv_columns(csv_path)
    frame = pl.scan_csv(csv_path, schema_overrides=_CSV_TYPES, infer_schema=False,
                        low_memory=True)
    stage_expr, keep = _csv_stage_and_filter(csv_path, frame, columns, stage)
    end = _timestamp_expr(time_unit).dt.epoch("us").cast(pl.Float64) / 1e6
    windows = (frame.filter(pl.col("metric_name").is_in(["http_req_duration",
                                                          "iteration_duration"]) & keep)
               .select(stage_expr.cast(pl.String).alias("stage"), end.alias("end"),
                       (end - pl.col("metric_value") / 1000).alias("start"))
               .group_by("stage").agg(pl.col("start").min(), pl.col("end").max())
               .collect())
    return {row["stage"]: (row["start"], row["end"]) for row in windows.iter_rows(named=True)}


def sink_atomically(frame: pl.LazyFrame, out_path: Path) -> None:
    """Stream ``frame`` to parquet under a temporary name, then rename it into place."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    try:
        frame.sink_parquet(tmp, compression="zstd")
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def csv_to_parquet(csv_path: Path, out_path: Path, *, stage: str | None, repeat: int,
                   time_unit: TimeFormat = "us") -> int:
    """Convert a k6 raw CSV to requests.parquet with bounded memory; return the row count."""
    sink_atomically(requests_from_csv(csv_path, stage=stage, repeat=repeat, time_unit=time_unit),
                    out_path)
    return int(pl.scan_parquet(out_path).select(pl.len()).collect().item())  # from metadata


def count_dropped_iterations(csv_path: Path) -> int:
    """dropped_iterations outside the warm-up, from a raw CSV."""
    frame = pl.scan_csv(csv_path, schema_overrides=_CSV_TYPES, infer_schema=False)
    keep = ((pl.col("scenario").fill_null("") != "warmup")
            if "scenario" in csv_columns(csv_path) else pl.lit(True))
    total = (frame.filter((pl.col("metric_name") == "dropped_iterations") & keep)
             .select(pl.col("metric_value").sum()).collect().item())
    return int(total or 0)


# ---------------------------------------------------------------------------------------
# import: recognising what a file is


def _open_text(path: Path) -> IO[str]:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")  # noqa: SIM115


def sniff(path: Path) -> str:
    """'csv', 'ndjson', 'summary' (handleSummary), 'summary-export' (legacy) or
    'summary-v2' (the machine-readable summary of k6 1.5+), or the kind of another tool's
    output (:data:`loadproof.formats.FORMATS`); anything else is refused."""
    try:
        with _open_text(path) as handle:
            head = handle.read(65536)
    except OSError as exc:
        raise ImportFormatError(f"{path}: cannot read ({exc})", path=path) from exc
    except EOFError as exc:
        raise ImportFormatError(f"{path}: truncated gzip file", path=path) from exc
    stripped = head.lstrip()
    if stripped.startswith(CSV_HEADER_PREFIX):
        return "csv"
    from .formats import described, detect  # other tools' outputs: runner/formats/

    other = detect(path, head)
    if other is not None:
        return other
    first_line = stripped.split("\n", 1)[0]
    try:
        record = json.loads(first_line)
        if isinstance(record, dict) and record.get("type") in ("Metric", "Point"):
            return "ndjson"
    except json.JSONDecodeError:
        pass
    if stripped.startswith("{"):
        try:
            with _open_text(path) as handle:
                data = json.load(handle)
        except (json.JSONDecodeError, EOFError) as exc:
            raise ImportFormatError(f"{path}: looks like JSON but does not parse ({exc})",
                                    path=path) from exc
        kind = summary_kind(data)
        if kind:
            return kind
    raise ImportFormatError(
        f"{path}: not a load-test output loadproof knows. Expected one of: a raw CSV (k6 run --out "
        f"csv=FILE), raw JSON lines (--out json=FILE), a --summary-export JSON, or a "
        f"handleSummary JSON; or {described()}; gzipped files are fine", path=path)


def summary_values(metrics: dict[str, Any], *names: str) -> dict[str, Any] | None:
    """The values of the first of ``names`` present in a summary's metrics, whichever shape:
    handleSummary nests them under "values", --summary-export does not."""
    for name in names:
        entry = metrics.get(name)
        if isinstance(entry, dict):
            values = entry.get("values", entry)
            if isinstance(values, dict):
                return values
    return None


def read_bytes(path: Path) -> bytes:
    """A file's bytes, decompressed when it is gzipped."""
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def summary_kind(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    metrics = data.get("metrics")
    if isinstance(metrics, dict) and "root_group" in data:
        sample: Any = next(iter(metrics.values()), {})
        if isinstance(sample, dict) and "values" in sample:
            return "summary"
        return "summary-export"
    if isinstance(metrics, dict) and ("http" in metrics or "version" in data):
        return "summary-v2"
    return None


_WINDOW_METRICS = ("http_req_duration", "iteration_duration")


def ndjson_points(path: Path, metrics: tuple[str, ...] = ("http_req_duration",)
                  ) -> Iterator[tuple[str, dict[str, Any]]]:
    """(metric, data) of the Points of ``metrics`` in a raw JSON output."""
    needles = [f'"{m}"' for m in metrics]
    with _open_text(path) as handle:
        for line in handle:
            if not any(needle in line for needle in needles):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ImportFormatError(f"{path}: a line does not parse as JSON ({exc}); is "
                                        "the file cut short?", path=path) from exc
            if record.get("type") == "Point" and record.get("metric") in metrics:
                yield record["metric"], record["data"]


def _ndjson_layout(path: Path) -> tuple[bool, bool]:
    """(whether requests carry expected_response, whether untagged requests span several
    scenarios); refuses a file whose requests carry no status tag."""
    has_expected = False
    scenarios: set[str] = set()
    first = True
    for _metric, point in ndjson_points(path):
        tags = point.get("tags") or {}
        if first:
            for tag in REQUIRED_TAGS:
                if tag not in tags:
                    raise missing_tag_error(path, tag)
            has_expected = "expected_response" in tags
            first = False
        if "stage" not in tags and tags.get("scenario") is not None:
            scenarios.add(str(tags["scenario"]))
    return has_expected, len(scenarios) > 1


def ndjson_to_parquet(path: Path, out_path: Path, *, repeat: int = 1,
                      batch_rows: int = 100_000,
                      windows: dict[str, tuple[float, float]] | None = None) -> int:
    """Stream http_req_duration points of a raw JSON output into requests.parquet.

    Stages and warm-up as in :func:`requests_from_csv`. ``windows``, when given, receives each
    stage's load window (unix seconds, microsecond resolution) as :func:`csv_windows` does."""
    import pyarrow.parquet as pq

    has_expected, by_scenario = _ndjson_layout(path)
    schema = REQUEST_SCHEMA.to_arrow()
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    rows = 0
    columns: dict[str, list[Any]] = {c: [] for c in REQUEST_COLUMNS}
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            def flush() -> None:
                if columns["timestamp"]:
                    frame = pl.DataFrame(columns, schema_overrides={"expected": pl.Boolean}
                                         ).with_columns(
                        pl.col("timestamp").str.to_datetime(time_zone="UTC", time_unit="us"))
                    writer.write_table(frame.cast(REQUEST_SCHEMA).to_arrow().cast(schema))
                    for values in columns.values():
                        values.clear()

            for metric, point in ndjson_points(path, _WINDOW_METRICS):
                tags = point.get("tags") or {}
                tagged = tags.get("stage")
                if tags.get("scenario") == "warmup" and tagged is not None \
                        and re.match(LOADPROOF_STAGE_KEY, str(tagged)):
                    continue  # loadproof's own warm-up
                stage = str(tagged or (tags.get("scenario") if by_scenario else None)
                            or "imported")
                if windows is not None:
                    end = dt.datetime.fromisoformat(point["time"]).timestamp()
                    start = end - float(point["value"]) / 1000
                    known = windows.get(stage)
                    windows[stage] = ((min(known[0], start), max(known[1], end)) if known
                                      else (start, end))
                if metric != "http_req_duration":
                    continue
                columns["timestamp"].append(point["time"])
                columns["duration_ms"].append(float(point["value"]))
                columns["status"].append(int(tags.get("status") or 0))
                columns["expected"].append(str(tags.get("expected_response")) == "true"
                                           if has_expected else None)
                columns["name"].append(tags.get("name"))
                columns["method"].append(tags.get("method"))
                columns["error_code"].append(int(tags.get("error_code") or 0))
                columns["stage"].append(stage)
                columns["repeat"].append(repeat)
                rows += 1
                if len(columns["timestamp"]) >= batch_rows:
                    flush()
            flush()
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return rows


def decompress_to(path: Path, out_dir: Path) -> Path:
    """A plain copy of a gzipped file (polars scans plain files lazily)."""
    with open(path, "rb") as probe:
        if probe.read(2) != b"\x1f\x8b":
            return path
    target = out_dir / (path.name.removesuffix(".gz") or "raw.csv")
    with gzip.open(path, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target


def empty_requests_table() -> pa.Table:
    return pl.DataFrame(schema=REQUEST_SCHEMA).to_arrow()
