"""Golden inputs: k6 outputs recorded from real runs (tests/data)."""

import gzip
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from loadproof.errors import ImportFormatError, RunStoreError
from loadproof.importer import import_files
from loadproof.ingest import REQUEST_COLUMNS, count_dropped_iterations, csv_to_parquet, sniff
from loadproof.metrics import stage_metrics
from loadproof.store import load_run

from .conftest import DATA


def test_csv_to_parquet_keeps_requests_outside_warmup(tmp_path: Path) -> None:
    out = tmp_path / "requests.parquet"
    rows = csv_to_parquet(DATA / "raw.csv", out, stage="s1-40rps", repeat=1)
    frame = pl.read_parquet(out)
    assert rows == 81 == frame.height  # 122 requests in the file, 41 of them in the warm-up
    assert frame.columns == REQUEST_COLUMNS
    assert frame["timestamp"].dtype == pl.Datetime("us", "UTC")
    counts = dict(frame.group_by("status").len().iter_rows())
    assert counts == {200: 49, 429: 16, 500: 16}
    # 429 is expected (load shedding) in the shipped scripts; 500 is not
    assert frame.filter(pl.col("status") == 429)["expected"].all()
    assert not frame.filter(pl.col("status") == 500)["expected"].any()
    assert (frame["stage"] == "s1-40rps").all() and (frame["repeat"] == 1).all()
    # the conversion leaves no temporary file behind
    assert [p.name for p in tmp_path.iterdir()] == ["requests.parquet"]


def test_parquet_matches_k6_summary_count() -> None:
    summary = json.loads((DATA / "handle_summary.json").read_text())
    assert summary["metrics"]["http_req_duration{scenario:main}"]["values"]["count"] == 81


def test_dropped_iterations_counted_outside_warmup() -> None:
    assert count_dropped_iterations(DATA / "raw.csv") == 0


@pytest.mark.parametrize(("name", "kind"), [("raw.csv", "csv"), ("raw.ndjson.gz", "ndjson"),
                                            ("handle_summary.json", "summary"),
                                            ("summary_export.json", "summary-export"),
                                            ("plain_seconds.csv", "csv")])
def test_sniff_recognises_k6_outputs(name: str, kind: str) -> None:
    assert sniff(DATA / name) == kind


def test_sniff_refuses_other_files(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    with pytest.raises(ImportFormatError, match="Expected one of"):
        sniff(other)
    broken = tmp_path / "half.json"
    broken.write_text('{"metrics": {')
    with pytest.raises(ImportFormatError, match="does not parse"):
        sniff(broken)


def test_import_csv_with_summary(runs_dir: Path) -> None:
    run = import_files([DATA / "raw.csv", DATA / "handle_summary.json"], label="imported",
                       out_dir=runs_dir)
    reloaded = load_run(run.path)
    assert reloaded.status == "complete"
    (stage,) = stage_metrics(reloaded)
    assert stage.key == "s1-40rps" and stage.level == 40 and stage.model == "rate"
    assert stage.requests == 81 and stage.successes == 49 and stage.rate_limited == 16
    assert stage.summary_p95_ms is not None


def test_import_gzipped_ndjson_matches_csv(runs_dir: Path) -> None:
    from_json = stage_metrics(import_files([DATA / "raw.ndjson.gz"], label="j", out_dir=runs_dir))
    from_csv = stage_metrics(import_files([DATA / "raw.csv"], label="c", out_dir=runs_dir))
    assert from_json[0].requests == from_csv[0].requests == 81
    assert from_json[0].latency_ok.p95_ms == pytest.approx(from_csv[0].latency_ok.p95_ms)


def test_import_plain_k6_csv_in_unix_seconds(runs_dir: Path, tmp_path: Path) -> None:
    gz = tmp_path / "plain.csv.gz"
    with open(DATA / "plain_seconds.csv", "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    run = import_files([gz], label="plain", out_dir=runs_dir)
    (stage,) = stage_metrics(run)
    assert stage.key == "imported" and stage.requests == 48 and stage.duration_s >= 0


@pytest.mark.parametrize("name", ["summary_export.json", "handle_summary.json"])
def test_import_summary_alone_gives_figures_without_intervals(runs_dir: Path, name: str) -> None:
    run = import_files([DATA / name], label="s", out_dir=runs_dir)
    (stage,) = stage_metrics(load_run(run.path))
    # the main scenario: 81 requests, 16 of them 500s, 16 rate-limited (429)
    assert stage.summary_only and stage.requests == 81
    assert stage.errors == 16 and stage.rate_limited == 16 and stage.successes == 49
    assert stage.latency_ok.p95_ms is not None and stage.latency_ok.p99_ms is not None
    from loadproof.compare import compare_runs

    other = import_files([DATA / name], label="t", out_dir=runs_dir)
    p95 = compare_runs(run, other).stage("imported").metrics["latency_p95_ms"]
    assert p95.ratio == 1.0 and p95.ci95 is None and p95.verdict == "no interval"


def test_import_refuses_unknown_summary_shapes_and_writes_nothing(runs_dir: Path,
                                                                  tmp_path: Path) -> None:
    newer = tmp_path / "summary-v2.json"
    newer.write_text(json.dumps({"version": "1.5.0", "metrics": {"http": {}}}))
    with pytest.raises(ImportFormatError, match="k6 1.5 or newer"):
        import_files([newer], label="x", out_dir=runs_dir)
    with pytest.raises(ImportFormatError, match="several summaries"):
        import_files([DATA / "summary_export.json", DATA / "handle_summary.json"], label="x",
                     out_dir=runs_dir)
    assert list(runs_dir.iterdir()) == []


def test_load_run_errors_name_the_file(runs_dir: Path) -> None:
    run = import_files([DATA / "raw.csv"], label="ok", out_dir=runs_dir)
    with pytest.raises(RunStoreError, match="run not found"):
        load_run(runs_dir / "nope")
    manifest = run.path / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    with pytest.raises(RunStoreError, match=r"manifest.json is not valid JSON"):
        load_run(run.path)
    manifest.write_text(text)
    (run.path / run.stages[0]["requests_file"]).unlink()
    with pytest.raises(RunStoreError, match="requests.parquet is missing"):
        load_run(run.path)
