"""``loadproof import``: k6 outputs a user already has become a run in the same store."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from .errors import ImportFormatError, UsageError
from .formats import PER_REQUEST_KINDS, RATE_KINDS, convert
from .ingest import (
    TIME_RESOLUTION_S,
    TimeFormat,
    csv_to_parquet,
    csv_windows,
    decompress_to,
    ndjson_to_parquet,
    read_bytes,
    sink_atomically,
    sniff,
    summary_values,
)
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


_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def csv_time_unit(path: Path) -> TimeFormat:
    """The K6_CSV_TIME_FORMAT a k6 CSV was written with: unix (seconds, k6's default),
    unix_milli, unix_micro, unix_nano or rfc3339, told apart by the first timestamp."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        rows = csv.reader(handle)  # two lines only: a lazy scan of a big file costs more
        header, first = next(rows, []), next(rows, None)
    if first is None or "timestamp" not in header:
        return "s"
    column = header.index("timestamp")
    value = first[column] if column < len(first) else ""
    if _RFC3339.match(value):
        return "rfc3339"
    unit = {10: "s", 13: "ms", 16: "us", 19: "ns"}.get(len(value)) if value.isdigit() else None
    if unit is None:
        raise ImportFormatError(
            f"{path}: timestamp {value!r} is in no K6_CSV_TIME_FORMAT loadproof reads; "
            "re-export with K6_CSV_TIME_FORMAT=unix_micro (or unix, unix_milli, unix_nano, "
            "rfc3339)", path=path)
    return unit  # type: ignore[return-value]


def _summary_duration(data: dict[str, Any], requests: int) -> float | None:
    """k6's own test duration from a summary of the same requests: handleSummary's
    state.testRunDurationMs, else http_reqs count / rate (k6 divides by that duration).
    None when the summary counts other requests (a warm-up loadproof left out, say)."""
    reqs = summary_values(data.get("metrics") or {}, "http_reqs")
    if not reqs or int(reqs.get("count") or 0) != requests:
        return None
    state_ms = (data.get("state") or {}).get("testRunDurationMs")
    if isinstance(state_ms, (int, float)) and state_ms > 0:
        return float(state_ms) / 1000
    rate = float(reqs.get("rate") or 0)
    return requests / rate if rate > 0 else None


def _file_stages(raws: list[tuple[Path, str]], levels: list[int] | None
                 ) -> list[tuple[str | None, int, int]]:
    """(stage key, repeat, stage index) of each raw file. With ``levels`` (``--stages``) the
    file's level names its stage, ``s<i>-<level>vus`` (``rps`` for vegeta, which sends at a
    set rate), and files of the same level are its repeats. Without, a k6 file is one
    repeat whose stages come from its tags (None); other tools' files are one stage each:
    ``imported`` alone, ``file-<n>`` when several."""
    others = [k for _p, k in raws if k in PER_REQUEST_KINDS]
    if others and (len(others) != len(raws) or len(set(others)) > 1):
        raise ImportFormatError(
            "import: one tool's outputs per import (given: "
            f"{', '.join(f'{p} ({k})' for p, k in raws)})", path=raws[0][0])
    if levels is not None:
        if len(levels) != len(raws):
            raise UsageError(f"--stages names {len(levels)} level(s) for {len(raws)} "
                             "per-request file(s); give one level per file, in order")
        distinct = list(dict.fromkeys(levels))
        unit = "rps" if others and others[0] in RATE_KINDS else "vus"  # vegeta: a rate
        return [(f"s{distinct.index(level) + 1}-{level}{unit}", levels[:n + 1].count(level),
                 distinct.index(level) + 1) for n, level in enumerate(levels)]
    if not others:
        return [(None, n, n) for n in range(1, len(raws) + 1)]
    if len(raws) == 1:
        return [("imported", 1, 1)]
    return [(f"file-{n}", 1, n) for n in range(1, len(raws) + 1)]


def _relabel(parquet: Path, key: str, windows: dict[str, tuple[float, float]]) -> None:
    """Name every request of a one-stage k6 file's parquet ``key`` (``--stages``)."""
    found = pl.read_parquet(parquet, columns=["stage"])["stage"].unique().to_list()
    if len(found) > 1:
        raise UsageError(f"--stages: {parquet.parent.name} holds the stages "
                         f"{', '.join(sorted(found))} already; --stages names one level per "
                         "file of one stage")
    window = next(iter(windows.values()), None)
    windows.clear()
    if window is not None:
        windows[key] = window
    sink_atomically(pl.scan_parquet(parquet).with_columns(pl.lit(key).alias("stage")), parquet)


def import_files(files: list[Path | str], *, label: str,
                 out_dir: Path | str = DEFAULT_RUNS_DIR, levels: list[int] | None = None,
                 stage_by: str | None = None) -> Run:
    """Turn load-test outputs into a stored run (see :func:`_file_stages` for how files
    become stages and repeats); summaries are kept beside them. Nothing is written unless
    every file is recognised."""
    if not files:
        raise UsageError("import needs at least one file")
    paths = [Path(f) for f in files]
    for path in paths:
        if not path.is_file():
            raise UsageError(f"import: no such file: {path}")
    kinds = [(path, sniff(path)) for path in paths]
    raws = [(p, k) for p, k in kinds if k in RAW_KINDS or k in PER_REQUEST_KINDS]
    history = [(p, k) for p, k in kinds if k == "locust-history"]
    summaries = [(p, k) for p, k in kinds
                 if k not in RAW_KINDS and k not in PER_REQUEST_KINDS and k != "locust-history"]
    _check_locust(kinds, raws, summaries, history)
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
    if not raws and levels is not None and len(levels) != 1:
        raise UsageError("--stages: a summary is one stage; give one level")
    if stage_by is not None and (levels is not None or not raws
                                 or any(k != "jmeter-jtl" for _p, k in raws)):
        raise UsageError("--stage-by splits JMeter JTL files by a thread-count column; it "
                         "takes JTL files only, and not with --stages")
    plan = ([(None, n, n) for n in range(1, len(raws) + 1)] if stage_by  # file = repeat
            else _file_stages(raws, levels) if raws else [])
    run_id, run_path = create_run_dir(Path(out_dir), label)
    stages: list[dict[str, Any]] = []
    if not raws and summaries[0][1] == "locust-stats":
        return _import_locust(summaries[0][0], history, run_id, run_path, label, kinds,
                              levels[0] if levels else None)
    if not raws:
        return _import_summary_only(summaries[0][0], run_id, run_path, label, kinds,
                                    level=levels[0] if levels else None)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for (path, kind), (key, repeat, index) in zip(raws, plan, strict=True):
                stage_dir = run_path / "stages" / (f"r{repeat}-{key}" if key
                                                   else f"r{repeat}-imported")
                stage_dir.mkdir(parents=True)
                out = stage_dir / "requests.parquet"
                windows: dict[str, tuple[float, float]] = {}
                if kind in PER_REQUEST_KINDS:
                    plain = decompress_to(path, Path(scratch))
                    if plain != path:  # gzip keeps the file's time; hey's clock needs it
                        os.utime(plain, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
                    converted = convert(kind, plain, out,
                                        repeat=repeat, stage=key or "imported",
                                        stage_by=stage_by)
                    resolution = converted.time_resolution_s
                    records = _stage_records(out, stage_dir.name, repeat, converted.windows,
                                             resolution)
                    for record in records:
                        record.update(converted.extra, source_kind=kind,
                                      import_notes=converted.notes)
                        if stage_by is None:
                            record["index"] = index
                    stages.extend(records)
                    continue
                if kind == "csv":
                    plain = decompress_to(path, Path(scratch))
                    unit = csv_time_unit(plain)
                    csv_to_parquet(plain, out, stage=None, repeat=repeat, time_unit=unit)
                    windows = csv_windows(plain, stage=None, time_unit=unit)
                    resolution = TIME_RESOLUTION_S[unit]
                else:
                    ndjson_to_parquet(path, out, repeat=repeat, windows=windows)
                    resolution = TIME_RESOLUTION_S["us"]
                if key is not None:
                    _relabel(out, key, windows)
                stages.extend(_stage_records(out, stage_dir.name, repeat, windows, resolution))
        for number, (path, _kind) in enumerate(summaries, start=1):
            atomic_write_bytes(run_path / "imported" / f"summary-{number}.json", read_bytes(path))
        if len(summaries) == 1 and len(stages) == 1:
            stages[0]["summary_file"] = "imported/summary-1.json"
            data = json.loads(read_bytes(summaries[0][0]))
            measured = _summary_duration(data, stages[0]["requests"])
            if measured is not None:
                stages[0].update(measured_s=measured, duration_source="k6 summary",
                                 time_resolution_s=None)
    except BaseException:
        shutil.rmtree(run_path, ignore_errors=True)
        raise
    if not any(s["requests"] for s in stages):
        shutil.rmtree(run_path, ignore_errors=True)
        raise ImportFormatError(f"import: {', '.join(str(p) for p, _ in raws)} hold no "
                                "requests (for k6: no http_req_duration samples outside a "
                                "warm-up)", path=raws[0][0])
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


def _check_locust(kinds: list[tuple[Path, str]], raws: list[tuple[Path, str]],
                  summaries: list[tuple[Path, str]], history: list[tuple[Path, str]]) -> None:
    """Locust's files import alone: one _stats.csv, with at most one _stats_history.csv."""
    locust = [p for p, k in summaries if k == "locust-stats"]
    if not locust and not history:
        return
    if len(locust) != 1 or len(history) > 1 or raws or len(summaries) > 1:
        raise ImportFormatError(
            "import: Locust's outputs import on their own, one test at a time: one "
            "PREFIX_stats.csv and, optionally, its PREFIX_stats_history.csv (given: "
            f"{', '.join(f'{p} ({k})' for p, k in kinds)})",
            path=(locust or [p for p, _ in history])[0])


def _import_locust(path: Path, history: list[tuple[Path, str]], run_id: str, run_path: Path,
                   label: str, kinds: list[tuple[Path, str]], level: int | None) -> Run:
    """A summary-only run from Locust's aggregates (see loadproof.formats.locust)."""
    from .formats.locust import Stats, timeline

    extra: dict[str, Any] = {}
    try:
        summary = Stats.summary(path)
        atomic_write_bytes(run_path / "imported" / "locust_stats.csv", read_bytes(path))
        for hist, _kind in history:
            atomic_write_bytes(run_path / "imported" / "locust_stats_history.csv",
                               read_bytes(hist))
            # the timeline a report's time chart draws (Locust's own figures, no intervals)
            sink_atomically(timeline(hist).lazy(), run_path / "imported" / "timeline.parquet")
            extra["timeline_file"] = "imported/timeline.parquet"
    except BaseException:
        shutil.rmtree(run_path, ignore_errors=True)
        raise
    return _import_summary_only(
        path, run_id, run_path, label, kinds,
        data=json.dumps(summary, indent=2).encode(), level=level, extra=extra,
        reason="imported from Locust's _stats.csv: figures are Locust's aggregates (its "
               "percentiles rounded to its buckets, 429s counted among its failures), with "
               "no per-request timings and so no intervals")


def _import_summary_only(path: Path, run_id: str, run_path: Path, label: str,
                         kinds: list[tuple[Path, str]], *, data: bytes | None = None,
                         reason: str | None = None, level: int | None = None,
                         extra: dict[str, Any] | None = None) -> Run:
    """A one-stage run from a summary: usable for point ratios, never for intervals."""
    from .metrics import from_summary

    atomic_write_bytes(run_path / "imported" / "summary-1.json",
                       data if data is not None else read_bytes(path))
    record: dict[str, Any] = {
        "dir": "r1-imported", "key": "imported", "index": 1, "repeat": 1, "level": None,
        "model": None, "duration_s": None, "warmup_s": 0.0, "status": "complete",
        "summary_only": True, "summary_file": "imported/summary-1.json", **(extra or {}),
    }
    if level is not None:  # --stages names the summary's level
        record.update(key=f"s1-{level}vus", level=level, model="vus")
    run = Run(run_path, _manifest(
        run_id, label, kinds, [record], reason=reason or "imported from a summary alone: "
        "figures are k6's aggregates, with no per-request timings and so no intervals"))
    try:
        record["requests"] = from_summary(record, run).requests
    except Exception:
        shutil.rmtree(run_path, ignore_errors=True)
        raise
    run.save()
    return run


def _resolution_words(seconds: float) -> str:
    return {1.0: "1 s", 1e-3: "1 ms", 1e-6: "1 µs"}.get(seconds, f"{seconds:g} s")


def _stage_records(parquet: Path, dir_name: str, repeat: int,
                   windows: dict[str, tuple[float, float]],
                   resolution_s: float) -> list[dict[str, Any]]:
    """One record per stage found in a raw file, with its measured load window: as long as
    its requests and iterations ran, as fine as the file's timestamps."""
    frame = pl.read_parquet(parquet, columns=["stage", "timestamp"])
    groups = (frame.group_by("stage", maintain_order=True)
              .agg(pl.len().alias("n"), pl.col("timestamp").min().alias("start"),
                   pl.col("timestamp").max().alias("end")))
    records = []
    for position, row in enumerate(groups.iter_rows(named=True), start=1):
        key = row["stage"]
        match = _KEY.match(key)
        window = windows.get(key)
        measured = max(window[1] - window[0], 0.0) if window else None
        records.append({
            "dir": dir_name, "key": key, "repeat": repeat,
            "index": int(match.group(1)) if match else position,
            "level": int(match.group(2)) if match else None,
            "model": ("vus" if match.group(3) == "vus" else "rate") if match else None,
            "duration_s": None, "warmup_s": 0.0, "status": "complete",
            "measured_s": measured,
            "duration_source": f"timestamps ({_resolution_words(resolution_s)})",
            "time_resolution_s": resolution_s,
            "requests": int(row["n"]), "dropped_iterations": None,
            "requests_file": f"stages/{dir_name}/requests.parquet",
        })
    return records


def import_shards(files: list[Path | str], *, label: str,
                  out_dir: Path | str = DEFAULT_RUNS_DIR) -> Run:
    """``import --shards``: raw outputs (k6 CSV or JSON lines, gzipped or not) of the same
    stage(s) from several k6 generators. The files holding a stage (by loadproof's ``stage``
    tag, else ``imported``) are its shards: the stage is the union of their requests, with a
    ``shard`` column (the file's position among them, from 0) and each file's provenance under
    the stage's ``shards``. A warning goes in the manifest when a stage's files' time windows
    do not all overlap (clock skew between the generators, or files of different tests), or
    when stages have different numbers of files (one missing?)."""
    from .shards import window_overlap

    paths = [Path(f) for f in files]
    if len(paths) < 2:
        raise UsageError("import --shards merges the raw outputs of several generators: give "
                         "at least two files")
    for path in paths:
        if not path.is_file():
            raise UsageError(f"import: no such file: {path}")
    kinds = [(path, sniff(path)) for path in paths]
    for path, kind in kinds:
        if kind not in RAW_KINDS:
            raise ImportFormatError(
                f"{path}: import --shards takes k6's raw outputs (--out csv=FILE or --out "
                f"json=FILE, gzipped or not); this is {kind!r}", path=path)
    run_id, run_path = create_run_dir(Path(out_dir), label)
    dir_name = "r1-shards"
    stage_dir = run_path / "stages" / dir_name
    parts: list[Path] = []
    per_file: list[dict[str, tuple[float, float]]] = []
    entries: list[dict[str, Any]] = []
    resolutions: list[float] = []
    try:
        stage_dir.mkdir(parents=True)
        with tempfile.TemporaryDirectory() as scratch:
            for index, (path, kind) in enumerate(kinds):
                part = Path(scratch) / f"file-{index}.parquet"
                windows: dict[str, tuple[float, float]] = {}
                if kind == "csv":
                    own = Path(scratch) / str(index)  # files of the same name (raw.csv.gz)
                    own.mkdir()
                    plain = decompress_to(path, own)
                    unit = csv_time_unit(plain)
                    csv_to_parquet(plain, part, stage=None, repeat=1, time_unit=unit)
                    windows = csv_windows(plain, stage=None, time_unit=unit)
                    resolutions.append(TIME_RESOLUTION_S[unit])
                else:
                    ndjson_to_parquet(path, part, repeat=1, windows=windows)
                    resolutions.append(TIME_RESOLUTION_S["us"])
                parts.append(part)
                per_file.append(windows)
                counts = dict(pl.scan_parquet(part).group_by("stage").agg(pl.len())
                              .collect().iter_rows())
                entries.append({"file": str(path.resolve()), "kind": kind,
                                "sha256": _sha256(path),
                                "stages": {str(k): int(v) for k, v in counts.items()}})
            # each stage's shards: the files holding it, numbered in the order given
            holders: dict[str, list[int]] = {}
            for index, entry in enumerate(entries):
                for key in entry["stages"]:
                    holders.setdefault(key, []).append(index)
            frames = []
            for index, part in enumerate(parts):
                numbering = {key: files.index(index) for key, files in holders.items()
                             if index in files}
                frames.append(pl.scan_parquet(part).with_columns(
                    pl.col("stage").replace_strict(numbering, return_dtype=pl.Int32)
                    .alias("shard")))
            if frames:
                sink_atomically(pl.concat(frames, how="vertical"),
                                stage_dir / "requests.parquet")
    except BaseException:
        shutil.rmtree(run_path, ignore_errors=True)
        raise
    if not any(entry["stages"] for entry in entries):
        shutil.rmtree(run_path, ignore_errors=True)
        raise ImportFormatError("import --shards: the files hold no requests (for k6: no "
                                "http_req_duration samples outside a warm-up)", path=paths[0])
    union: dict[str, tuple[float, float]] = {}
    for windows in per_file:
        for key, (start, end) in windows.items():
            known = union.get(key)
            union[key] = (min(known[0], start), max(known[1], end)) if known else (start, end)
    stages = _stage_records(stage_dir / "requests.parquet", dir_name, 1, union,
                            max(resolutions))
    warnings: list[str] = []
    for record in stages:
        key = record["key"]
        shard_list = []
        spans = []
        for shard, index in enumerate(holders[key]):
            window = per_file[index].get(key)
            begin = dt.datetime.fromtimestamp(window[0], dt.UTC) if window else None
            finish = dt.datetime.fromtimestamp(window[1], dt.UTC) if window else None
            if begin is not None and finish is not None:
                spans.append((begin, finish))
            entry = entries[index]
            shard_list.append({"shard": shard, "file": entry["file"], "kind": entry["kind"],
                               "sha256": entry["sha256"], "requests": entry["stages"][key],
                               "window_start": iso(begin) if begin else None,
                               "window_end": iso(finish) if finish else None})
        record["generators"] = len(shard_list)
        record["shards"] = shard_list
        overlap = window_overlap(spans)
        record["shards_overlap_s"] = round(overlap, 6)
        if len(spans) > 1 and overlap <= 0:
            shown = "; ".join(f"shard {s['shard']} ({Path(s['file']).name}): "
                              f"{s['window_start']} to {s['window_end']}" for s in shard_list)
            warnings.append(f"stage {key}: the shards' time windows do not overlap ({shown}); "
                            "the generators' clocks disagree or the files come from different "
                            "tests, and the stage's rates divide by the union of the windows")
    sizes = {record["key"]: record["generators"] for record in stages}
    if len(set(sizes.values())) > 1:
        warnings.append("the stages have different numbers of shard files ("
                        + ", ".join(f"{k}: {n}" for k, n in sizes.items())
                        + "); is a generator's file missing?")
    manifest = _manifest(run_id, label, kinds, stages, reason=None)
    manifest["generators"] = max(sizes.values())
    manifest["warnings"] = warnings
    run = Run(run_path, manifest)
    run.save()
    return run


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
