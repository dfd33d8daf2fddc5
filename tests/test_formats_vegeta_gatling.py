"""vegeta and Gatling outputs (tests/data/other_tools, see its README.md for how each file was
made): recognised by content, imported into the same run layout, figures equal to a
recomputation from the file itself; Gatling 3.13+'s binary log refused."""

import csv
import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from loadproof.cli import main
from loadproof.errors import ImportFormatError, UsageError
from loadproof.importer import import_files
from loadproof.ingest import REQUEST_SCHEMA, sniff
from loadproof.metrics import stage_metrics
from loadproof.stats import percentile
from loadproof.store import load_run

from .conftest import DATA

TOOLS = DATA / "other_tools"
VEGETA = TOOLS / "vegeta.csv"  # 10 requests/s for 3 s
VEGETA_5 = TOOLS / "vegeta_rate5.csv"  # 5 requests/s for 3 s
GATLING = (TOOLS / "gatling_3.7.4.log", TOOLS / "gatling_3.9.5.log")
GATLING_BINARY = TOOLS / "gatling_3.14.3_binary.log"


def _vegeta_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def _gatling_requests(path: Path) -> list[list[str]]:
    with open(path) as handle:
        return [line.rstrip("\n").split("\t") for line in handle if line.startswith("REQUEST\t")]


@pytest.mark.parametrize(("name", "kind"), [
    ("vegeta.csv", "vegeta-csv"), ("vegeta_rate5.csv", "vegeta-csv"),
    ("gatling_3.7.4.log", "gatling-log"), ("gatling_3.9.5.log", "gatling-log")])
def test_sniff_tells_vegeta_and_gatling_by_content_not_name(tmp_path: Path, name: str,
                                                            kind: str) -> None:
    misnamed = tmp_path / "results.json"
    shutil.copy(TOOLS / name, misnamed)
    assert sniff(misnamed) == kind


def test_vegeta_import_matches_the_file(runs_dir: Path) -> None:
    rows = _vegeta_rows(VEGETA)
    run = import_files([VEGETA], label="vg", out_dir=runs_dir)
    frame = pl.read_parquet(run.path / run.stages[0]["requests_file"])
    assert frame.schema == REQUEST_SCHEMA and frame.height == len(rows)
    codes = [int(r[1]) for r in rows]
    # the file holds every class: answers 2xx, 429 and 500, and no answer (refused, timed out)
    assert {200, 429, 500, 0} <= set(codes)
    assert any("connection refused" in r[5] for r in rows)
    assert any("Timeout" in r[5] for r in rows)
    (stage,) = stage_metrics(load_run(run.path))
    assert stage.requests == len(rows)
    assert stage.successes == sum(200 <= c < 400 for c in codes)
    assert stage.rate_limited == codes.count(429)
    assert stage.errors == sum(c == 0 or (c >= 400 and c != 429) for c in codes)
    latency = np.sort(np.array([int(r[2]) / 1e6 for r in rows]))
    assert np.array_equal(np.sort(frame["duration_ms"].to_numpy()), latency)
    assert stage.latency_all.p95_ms == percentile(latency, 0.95)
    ok = np.sort(np.array([int(r[2]) / 1e6 for r in rows if 200 <= int(r[1]) < 400]))
    assert stage.latency_ok.p95_ms == percentile(ok, 0.95)
    ends_us = sorted((int(r[0]) + int(r[2])) // 1000 for r in rows)
    assert [int(t.timestamp() * 1e6) for t in frame["timestamp"].sort()] == ends_us
    first_start = min(int(r[0]) for r in rows) / 1e9
    assert stage.duration_s == pytest.approx(ends_us[-1] / 1e6 - first_start, abs=2e-6)
    assert set(frame["name"]) == {r[10] for r in rows} and set(frame["method"]) == {"GET"}
    assert run.manifest["imported_from"][0]["kind"] == "vegeta-csv"


def test_vegeta_files_are_stages_by_rate(runs_dir: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    five, ten = len(_vegeta_rows(VEGETA_5)), len(_vegeta_rows(VEGETA))
    assert main(["import", str(VEGETA_5), str(VEGETA), "--label", "two",
                 "--out", str(runs_dir)]) == 0
    run = load_run(capsys.readouterr().out.strip(), runs_dir)
    assert [(m.key, m.requests) for m in stage_metrics(run)] == [
        ("file-1", five), ("file-2", ten)]
    # vegeta sends at a set rate: --stages names requests per second
    assert main(["import", str(VEGETA_5), str(VEGETA), "--stages", "5,10", "--label", "rates",
                 "--out", str(runs_dir)]) == 0
    run = load_run(capsys.readouterr().out.strip(), runs_dir)
    assert [(m.key, m.level, m.model, m.requests) for m in stage_metrics(run)] == [
        ("s1-5rps", 5, "rate", five), ("s2-10rps", 10, "rate", ten)]
    with pytest.raises(UsageError, match="--stage-by"):
        import_files([VEGETA], label="x", out_dir=runs_dir, stage_by="allThreads")
    with pytest.raises(ImportFormatError, match="one tool's outputs per import"):
        import_files([VEGETA, GATLING[0]], label="x", out_dir=runs_dir)


@pytest.mark.parametrize("path", GATLING, ids=["3.7.4", "3.9.5"])
def test_gatling_import_matches_the_file(runs_dir: Path, path: Path) -> None:
    records = _gatling_requests(path)
    run = import_files([path], label="ga", out_dir=runs_dir)
    frame = pl.read_parquet(run.path / run.stages[0]["requests_file"])
    assert frame.schema == REQUEST_SCHEMA and frame.height == len(records)
    (stage,) = stage_metrics(load_run(run.path))
    statuses = [r[5] for r in records]
    assert stage.requests == len(records)
    assert stage.successes == statuses.count("OK")
    assert stage.errors == statuses.count("KO") and stage.rate_limited == 0
    elapsed = np.sort(np.array([float(int(r[4]) - int(r[3])) for r in records]))
    assert np.array_equal(np.sort(frame["duration_ms"].to_numpy()), elapsed)
    assert stage.latency_all.p95_ms == percentile(elapsed, 0.95)
    assert stage.latency_all.max_ms == elapsed.max()
    ends = [int(r[4]) for r in records]
    assert frame["timestamp"].max() == dt.datetime.fromtimestamp(max(ends) / 1000, dt.UTC)
    span = (max(ends) - min(int(r[3]) for r in records)) / 1000
    assert stage.duration_s == pytest.approx(span, abs=1e-6)
    assert set(frame["name"]) == {r[2] for r in records}
    assert frame["status"].null_count() == frame.height  # Gatling logs no status for an OK
    version = path.name.removeprefix("gatling_").removesuffix(".log")
    assert run.stages[0]["gatling_version"] == version
    assert run.manifest["imported_from"][0]["kind"] == "gatling-log"


def test_gatling_ko_records_take_the_status_gatling_names(runs_dir: Path,
                                                          tmp_path: Path) -> None:
    # The committed real logs hold no KO record, so these KO lines are written here in the
    # layout of the real 3.9.5 log (REQUEST, group, name, start, end, KO, message), with
    # messages as Gatling's status check words them.
    real = GATLING[1].read_text()
    ko = ("REQUEST\t\tbusy\t1767825947700\t1767825947705\tKO\tstatus.find.in([200, 209], 304), "
          "found 429\n"
          "REQUEST\t\tbroken\t1767825947710\t1767825947730\tKO\tstatus.find.is(200), but "
          "actually found 503\n"
          "REQUEST\t\tbody\t1767825947740\t1767825947760\tKO\tjsonPath($.id).find.exists, "
          "found nothing\n")
    log = tmp_path / "simulation.log"
    log.write_text(real + ko)
    ok = len(_gatling_requests(GATLING[1]))
    run = import_files([log], label="ko", out_dir=runs_dir)
    (stage,) = stage_metrics(load_run(run.path))
    assert (stage.requests, stage.successes, stage.rate_limited, stage.errors) == (
        ok + 3, ok, 1, 2)
    frame = pl.read_parquet(run.path / run.stages[0]["requests_file"])
    named = dict(zip(frame["name"], frame["status"], strict=True))
    assert (named["busy"], named["broken"], named["body"]) == (429, 503, None)


def test_gatling_logs_as_stages(runs_dir: Path) -> None:
    first, second = (len(_gatling_requests(p)) for p in GATLING)
    run = import_files(list(GATLING), label="two", out_dir=runs_dir, levels=[7, 3])
    assert [(m.key, m.level, m.model, m.requests) for m in stage_metrics(load_run(run.path))] \
        == [("s1-7vus", 7, "vus", first), ("s2-3vus", 3, "vus", second)]


def test_gatling_binary_log_is_refused_saying_so(runs_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ImportFormatError, match=r"Gatling 3\.14\.3.*3\.13 and newer") as raised:
        import_files([GATLING_BINARY], label="x", out_dir=runs_dir)
    assert str(GATLING_BINARY) in str(raised.value)
    assert main(["import", str(GATLING_BINARY), "--label", "x", "--out", str(runs_dir)]) == 5
    assert "binary" in capsys.readouterr().err
    assert list(runs_dir.iterdir()) == []


@pytest.mark.parametrize(("content", "match"), [
    # Gatling 2's layout (scenario, userId, RUN, ...): another format
    ("sim\tsimid\tRUN\t1443018418000\t \t2.0\n", "Gatling 2"),
    # a text log with its RUN record and no REQUEST
    ("RUN\tsims.S\ts\t1767825934330\t \t3.9.5\nUSER\tS\tSTART\t1767825935179\n",
     "no REQUEST record"),
    # a vegeta row cut short
    ("1795801754793428624,200,9001203\n", "not a load-test output"),
])
def test_bad_vegeta_and_gatling_files_are_refused_naming_the_file(
        runs_dir: Path, tmp_path: Path, content: str, match: str) -> None:
    bad = tmp_path / "bad.log"
    bad.write_text(content)
    with pytest.raises(ImportFormatError, match=match) as raised:
        import_files([bad], label="x", out_dir=runs_dir)
    assert str(bad) in str(raised.value)
    assert list(runs_dir.iterdir()) == []


@pytest.mark.slow
def test_vegeta_output_made_now_imports(runs_dir: Path, tmp_path: Path) -> None:
    """The committed files' recipe run again with the vegeta command, when it is installed."""
    if shutil.which("vegeta") is None:
        pytest.skip("the vegeta command is not installed (the committed vegeta.csv covers the "
                    "importer without it)")
    out = tmp_path / "now.csv"
    subprocess.run([sys.executable, str(TOOLS / "make_vegeta.py"), str(out), "5"], check=True,
                   timeout=60, capture_output=True)
    rows = _vegeta_rows(out)
    (stage,) = stage_metrics(load_run(import_files([out], label="now",
                                                   out_dir=runs_dir).path))
    codes = [int(r[1]) for r in rows]
    assert stage.requests == len(rows) > 0
    assert stage.rate_limited == codes.count(429) > 0
    assert stage.errors == sum(c == 0 or (c >= 400 and c != 429) for c in codes) > 0


def _history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["Name"] == "Aggregated"]


def test_locust_history_is_stored_as_the_runs_timeline(runs_dir: Path) -> None:
    stats, history = TOOLS / "locust_stats.csv", TOOLS / "locust_stats_history.csv"
    rows = _history(history)
    run = import_files([stats, history], label="lo", out_dir=runs_dir)
    record = run.stages[0]
    timeline = pl.read_parquet(run.path / record["timeline_file"])
    assert timeline.height == len(rows) > 1
    assert [int(t.timestamp()) for t in timeline["timestamp"]] == [
        int(r["Timestamp"]) for r in rows]
    assert timeline["users"].to_list() == [int(r["User Count"]) for r in rows]
    assert timeline["p95_ms"].to_list() == [None if r["95%"] == "N/A" else float(r["95%"])
                                            for r in rows]
    assert timeline["total_requests"].to_list() == [int(r["Total Request Count"]) for r in rows]
    with open(stats, newline="") as handle:
        (total,) = [r for r in csv.DictReader(handle) if r["Name"] == "Aggregated"]
    assert timeline["total_requests"][-1] == int(total["Request Count"])
    # still a summary-only run: its comparisons carry no interval
    from loadproof.compare import compare_runs

    loaded = load_run(run.path)
    (stage,) = stage_metrics(loaded)
    assert stage.summary_only
    verdicts = {m.verdict for s in compare_runs(loaded, loaded).stages
                for m in s.metrics.values()}
    assert "no interval" in verdicts and verdicts <= {"no interval", "not comparable"}
    # the report's time chart draws Locust's own p95 from it
    from loadproof.charts import _over_time

    drawn = _over_time(loaded, "run")
    assert list(drawn["p95_ms"]) == [float(r["95%"]) for r in rows if r["95%"] != "N/A"]
    assert "Locust" in drawn["arm"].iloc[0]
    from loadproof.charts import latency_over_time

    assert "Locust's p95 of recent requests" in latency_over_time(
        compare_runs(loaded, loaded)).alt


def test_locust_stats_alone_has_no_timeline(runs_dir: Path) -> None:
    run = import_files([TOOLS / "locust_stats.csv"], label="lo", out_dir=runs_dir)
    assert "timeline_file" not in run.stages[0]
    from loadproof.charts import _over_time

    assert _over_time(load_run(run.path), "run").empty


def test_locust_history_without_its_columns_is_refused(runs_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut_stats_history.csv"
    bad.write_text("Timestamp,User Count,Type,Name,Requests/s,Failures/s\n"
                   "1795794662,2,,Aggregated,1.0,0.0\n")
    with pytest.raises(ImportFormatError, match="no 50%") as raised:
        import_files([TOOLS / "locust_stats.csv", bad], label="x", out_dir=runs_dir)
    assert str(bad) in str(raised.value)
    assert list(runs_dir.iterdir()) == []


def test_gzipped_vegeta_and_gatling_files(runs_dir: Path, tmp_path: Path) -> None:
    import gzip

    for source in (VEGETA, GATLING[1]):
        packed = tmp_path / f"{source.name}.gz"
        packed.write_bytes(gzip.compress(source.read_bytes()))
        run = import_files([packed], label="gz", out_dir=runs_dir)
        plain = import_files([source], label="plain", out_dir=runs_dir)
        assert pl.read_parquet(run.path / run.stages[0]["requests_file"]).equals(
            pl.read_parquet(plain.path / plain.stages[0]["requests_file"]))
    packed = tmp_path / "binary.log.gz"
    packed.write_bytes(gzip.compress(GATLING_BINARY.read_bytes()))
    with pytest.raises(ImportFormatError, match="binary simulation.log of Gatling 3.14.3"):
        import_files([packed], label="x", out_dir=runs_dir)
