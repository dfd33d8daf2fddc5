"""k6 outputs -> the run store: raw CSV to requests.parquet in a streaming way, and
``import`` of files a user already has (summary JSON, raw CSV or NDJSON, gzipped or not)."""

from __future__ import annotations

import gzip
import json
import os
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
    "expected": pl.Boolean(),  # k6's expected_response (2xx/3xx, and 429 in shipped scripts)
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
    "timestamp": pl.Int64,
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


def _timestamp_expr(unit: Literal["s", "ms", "us", "ns"]) -> pl.Expr:
    return pl.from_epoch(pl.col("timestamp"), time_unit=unit).dt.replace_time_zone("UTC")


def requests_from_csv(csv_path: Path, *, stage: str | None, repeat: int,
                      time_unit: Literal["s", "ms", "us", "ns"] = "us") -> pl.LazyFrame:
    """A lazy frame of request rows from a k6 CSV file, warm-up excluded.

    ``stage=None`` takes the stage from the ``stage=`` tag in extra_tags (imported files).
    """
    frame = pl.scan_csv(csv_path, schema_overrides=_CSV_TYPES, infer_schema=False,
                        low_memory=True)
    frame = frame.filter((pl.col("metric_name") == "http_req_duration")
                         & (pl.col("scenario").fill_null("") != "warmup"))
    stage_expr = (pl.lit(stage) if stage is not None else
                  pl.col("extra_tags").str.extract(r"(?:^|&)stage=([^&]+)").fill_null("imported"))
    return frame.select(
        _timestamp_expr(time_unit).alias("timestamp"),
        pl.col("metric_value").alias("duration_ms"),
        pl.col("status").fill_null(0).cast(pl.Int32).alias("status"),
        (pl.col("expected_response") == "true").fill_null(False).alias("expected"),
        pl.col("name"),
        pl.col("method"),
        pl.col("error_code").fill_null(0).cast(pl.Int32).alias("error_code"),
        stage_expr.cast(pl.String).alias("stage"),
        pl.lit(repeat, dtype=pl.Int32).alias("repeat"),
    )


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
                   time_unit: Literal["s", "ms", "us", "ns"] = "us") -> int:
    """Convert a k6 raw CSV to requests.parquet with bounded memory; return the row count."""
    sink_atomically(requests_from_csv(csv_path, stage=stage, repeat=repeat, time_unit=time_unit),
                    out_path)
    return int(pl.scan_parquet(out_path).select(pl.len()).collect().item())  # from metadata


def count_dropped_iterations(csv_path: Path) -> int:
    """dropped_iterations outside the warm-up, from a raw CSV."""
    frame = pl.scan_csv(csv_path, schema_overrides=_CSV_TYPES, infer_schema=False)
    total = (frame.filter((pl.col("metric_name") == "dropped_iterations")
                          & (pl.col("scenario").fill_null("") != "warmup"))
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
    'summary-v2' (the machine-readable summary of k6 1.5+); anything else is refused."""
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
        f"{path}: not a k6 output loadproof knows. Expected one of: a raw CSV (k6 run --out "
        f"csv=FILE), raw JSON lines (--out json=FILE), a --summary-export JSON, or a "
        f"handleSummary JSON; gzipped files are fine", path=path)


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


def ndjson_points(path: Path) -> Iterator[dict[str, Any]]:
    with _open_text(path) as handle:
        for line in handle:
            if '"http_req_duration"' not in line:
                continue
            record = json.loads(line)
            if record.get("type") == "Point" and record.get("metric") == "http_req_duration":
                yield record["data"]


def ndjson_to_parquet(path: Path, out_path: Path, *, repeat: int = 1,
                      batch_rows: int = 100_000) -> int:
    """Stream http_req_duration points of a raw JSON output into requests.parquet."""
    import pyarrow.parquet as pq

    schema = REQUEST_SCHEMA.to_arrow()
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    rows = 0
    columns: dict[str, list[Any]] = {c: [] for c in REQUEST_COLUMNS}
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            def flush() -> None:
                if columns["timestamp"]:
                    frame = pl.DataFrame(columns).with_columns(
                        pl.col("timestamp").str.to_datetime(time_zone="UTC", time_unit="us"))
                    writer.write_table(frame.cast(REQUEST_SCHEMA).to_arrow().cast(schema))
                    for values in columns.values():
                        values.clear()

            for point in ndjson_points(path):
                tags = point.get("tags") or {}
                if tags.get("scenario") == "warmup":
                    continue
                columns["timestamp"].append(point["time"])
                columns["duration_ms"].append(float(point["value"]))
                columns["status"].append(int(tags.get("status") or 0))
                columns["expected"].append(str(tags.get("expected_response")) == "true")
                columns["name"].append(tags.get("name"))
                columns["method"].append(tags.get("method"))
                columns["error_code"].append(int(tags.get("error_code") or 0))
                columns["stage"].append(tags.get("stage") or "imported")
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
