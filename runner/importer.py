"""``loadproof import``: k6 outputs a user already has become a run in the same store."""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import polars as pl

from .errors import ImportFormatError, UsageError
from .ingest import csv_to_parquet, decompress_to, ndjson_to_parquet, read_bytes, sniff
from .store import (
    DEFAULT_RUNS_DIR,
    FORMAT_VERSION,
    Run,
    atomic_write_bytes,
    create_run_dir,
    git_commit,
    iso,
    machine_info,
    utcnow,
)

_KEY = re.compile(r"^s(\d+)-(\d+)(vus|rps)$")
RAW_KINDS = ("csv", "ndjson")


def _csv_time_unit(path: Path) -> Literal["s", "ms", "us", "ns"]:
    """k6 writes unix seconds by default; K6_CSV_TIME_FORMAT may make it ms, us or ns."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        rows = csv.reader(handle)  # two lines only: a lazy scan of a big file costs more
        header, first = next(rows, []), next(rows, None)
    if first is None or "timestamp" not in header:
        return "s"
    column = header.index("timestamp")
    value = first[column] if column < len(first) else ""
    if not value.isdigit():
        raise ImportFormatError(f"{path}: timestamp {value!r} is not a unix time; re-export with "
                                "K6_CSV_TIME_FORMAT=unix_micro (or the default unix)", path=path)
    return {10: "s", 13: "ms", 16: "us", 19: "ns"}.get(len(value), "s")  # type: ignore[return-value]


def import_files(files: list[Path | str], *, label: str,
                 out_dir: Path | str = DEFAULT_RUNS_DIR) -> Run:
    """Turn k6 outputs into a stored run. Each raw file becomes one repeat; summaries are
    kept beside them. Nothing is written unless every file is recognised."""
    if not files:
        raise UsageError("import needs at least one file")
    paths = [Path(f) for f in files]
    for path in paths:
        if not path.is_file():
            raise UsageError(f"import: no such file: {path}")
    kinds = [(path, sniff(path)) for path in paths]
    raws = [(p, k) for p, k in kinds if k in RAW_KINDS]
    summaries = [(p, k) for p, k in kinds if k not in RAW_KINDS]
    for path, kind in summaries:
        if kind == "summary-v2":
            raise ImportFormatError(
                f"{path}: this is the machine-readable summary of k6 1.5 or newer, which "
                "loadproof does not read yet; import the raw output (--out csv or --out json) "
                "or a --summary-export / handleSummary JSON instead", path=path)
    if not raws and len(summaries) > 1:
        raise ImportFormatError(
            "import: several summaries and no raw output; give one summary per import (each "
            "becomes a one-stage run) or the raw output of the test", path=paths[0])
    run_id, run_path = create_run_dir(Path(out_dir), label)
    stages: list[dict[str, Any]] = []
    if not raws:
        return _import_summary_only(summaries[0][0], run_id, run_path, label, kinds)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for repeat, (path, kind) in enumerate(raws, start=1):
                stage_dir = run_path / "stages" / f"r{repeat}-imported"
                stage_dir.mkdir(parents=True)
                out = stage_dir / "requests.parquet"
                if kind == "csv":
                    plain = decompress_to(path, Path(scratch))
                    csv_to_parquet(plain, out, stage=None, repeat=repeat,
                                   time_unit=_csv_time_unit(plain))
                else:
                    ndjson_to_parquet(path, out, repeat=repeat)
                stages.extend(_stage_records(out, stage_dir.name, repeat))
        for number, (path, _kind) in enumerate(summaries, start=1):
            atomic_write_bytes(run_path / "imported" / f"summary-{number}.json", read_bytes(path))
        if len(summaries) == 1 and len(stages) == 1:
            stages[0]["summary_file"] = "imported/summary-1.json"
    except BaseException:
        shutil.rmtree(run_path, ignore_errors=True)
        raise
    if not any(s["requests"] for s in stages):
        shutil.rmtree(run_path, ignore_errors=True)
        raise ImportFormatError(f"import: {', '.join(str(p) for p, _ in raws)} hold no "
                                "http_req_duration samples outside a warm-up", path=raws[0][0])
    run = Run(run_path, _manifest(run_id, label, kinds, stages, reason=None))
    run.save()
    return run


def _manifest(run_id: str, label: str, kinds: list[tuple[Path, str]],
              stages: list[dict[str, Any]], reason: str | None) -> dict[str, Any]:
    """An imported run's manifest: no plan, target or script, and where its files came from."""
    now = iso(utcnow())
    return {
        "format_version": FORMAT_VERSION, "run_id": run_id, "label": label,
        "status": "complete", "status_reason": reason, "target": None, "profile": None,
        "plan": None, "script": None, "k6": {"binary": None, "version": None},
        "imported_from": [{"path": str(p.resolve()), "kind": k} for p, k in kinds],
        "commit_info": git_commit(), "machine_info": machine_info(),
        "started_at": now, "ended_at": now, "stages": stages,
    }


def _import_summary_only(path: Path, run_id: str, run_path: Path, label: str,
                         kinds: list[tuple[Path, str]]) -> Run:
    """A one-stage run from a summary: usable for point ratios, never for intervals."""
    from .metrics import from_summary

    atomic_write_bytes(run_path / "imported" / "summary-1.json", read_bytes(path))
    record: dict[str, Any] = {
        "dir": "r1-imported", "key": "imported", "index": 1, "repeat": 1, "level": None,
        "model": None, "duration_s": None, "warmup_s": 0.0, "status": "complete",
        "summary_only": True, "summary_file": "imported/summary-1.json",
    }
    run = Run(run_path, _manifest(
        run_id, label, kinds, [record], reason="imported from a summary alone: figures are "
        "k6's aggregates, with no per-request timings and so no intervals"))
    try:
        record["requests"] = from_summary(record, run).requests
    except Exception:
        shutil.rmtree(run_path, ignore_errors=True)
        raise
    run.save()
    return run


def _stage_records(parquet: Path, dir_name: str, repeat: int) -> list[dict[str, Any]]:
    frame = pl.read_parquet(parquet, columns=["stage", "timestamp"])
    groups = (frame.group_by("stage", maintain_order=True)
              .agg(pl.len().alias("n"), pl.col("timestamp").min().alias("start"),
                   pl.col("timestamp").max().alias("end")))
    records = []
    for position, row in enumerate(groups.iter_rows(named=True), start=1):
        key = row["stage"]
        match = _KEY.match(key)
        records.append({
            "dir": dir_name, "key": key, "repeat": repeat,
            "index": int(match.group(1)) if match else position,
            "level": int(match.group(2)) if match else None,
            "model": ("vus" if match.group(3) == "vus" else "rate") if match else None,
            "duration_s": None, "warmup_s": 0.0, "status": "complete",
            "requests": int(row["n"]), "dropped_iterations": None,
            "requests_file": f"stages/{dir_name}/requests.parquet",
        })
    return records
