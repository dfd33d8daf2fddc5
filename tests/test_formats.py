"""Other tools' outputs (tests/data/other_tools, each made by the real tool against a server on
127.0.0.1 that answered 200, 200, 200, 429, 500 in turn): recognised by content, imported
into the same run layout, figures equal to a recomputation from the file itself."""

import csv
import datetime as dt
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from loadproof.cli import main
from loadproof.errors import ImportFormatError, UsageError
from loadproof.importer import import_files
from loadproof.ingest import REQUEST_SCHEMA, sniff
from loadproof.metrics import stage_metrics
from loadproof.store import load_run

from .conftest import DATA

TOOLS = DATA / "other_tools"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(("name", "kind"), [
    ("jmeter.jtl", "jmeter-jtl"), ("hey.csv", "hey-csv"), ("locust_stats.csv", "locust-stats"),
    ("locust_stats_history.csv", "locust-history")])
def test_sniff_tells_formats_apart_by_content_not_name(tmp_path: Path, name: str,
                                                       kind: str) -> None:
    misnamed = tmp_path / "results.txt"
    shutil.copy(TOOLS / name, misnamed)
    assert sniff(misnamed) == kind


def test_jmeter_jtl_import_matches_the_file(runs_dir: Path) -> None:
    path = TOOLS / "jmeter.jtl"
    rows = _rows(path)
    run = import_files([path], label="jm", out_dir=runs_dir)
    frame = pl.read_parquet(run.path / run.stages[0]["requests_file"])
    assert frame.schema == REQUEST_SCHEMA
    assert frame.height == len(rows)
    # recomputed from the file: outcome classes from success and responseCode
    limited = sum(r["responseCode"] == "429" for r in rows)
    ok = sum(r["success"] == "true" and r["responseCode"] != "429" for r in rows)
    no_answer = sum(not r["responseCode"].isdigit() for r in rows)
    assert limited > 0 and no_answer > 0 and ok > 0  # the file holds every class
    (stage,) = stage_metrics(load_run(run.path))
    assert (stage.requests, stage.successes, stage.rate_limited) == (len(rows), ok, limited)
    assert stage.errors == len(rows) - ok - limited
    assert int((frame["status"] == 0).sum()) == no_answer  # exception names became status 0
    elapsed = np.array(sorted(float(r["elapsed"]) for r in rows))
    assert np.array_equal(np.sort(frame["duration_ms"].to_numpy()), elapsed)
    assert stage.latency_all.max_ms == elapsed.max()
    ends = [int(r["timeStamp"]) + int(r["elapsed"]) for r in rows]
    starts = [int(r["timeStamp"]) for r in rows]
    assert stage.duration_s == pytest.approx((max(ends) - min(starts)) / 1000, abs=1e-6)
    assert frame["timestamp"].max() == dt.datetime.fromtimestamp(max(ends) / 1000, dt.UTC)
    assert set(frame["name"]) == {r["label"] for r in rows}
    assert run.manifest["imported_from"][0]["kind"] == "jmeter-jtl"


def test_hey_csv_import_matches_the_file(runs_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "hey.csv"
    shutil.copy(TOOLS / "hey.csv", path)
    written = 1_790_000_000.0
    os.utime(path, (written, written))
    rows = _rows(path)
    run = import_files([path], label="hey", out_dir=runs_dir)
    (stage,) = stage_metrics(load_run(run.path))
    codes = [int(r["status-code"]) for r in rows]
    assert stage.requests == len(rows)
    assert stage.rate_limited == codes.count(429) > 0
    assert stage.successes == sum(200 <= c < 400 for c in codes)
    assert stage.errors == sum(c >= 400 and c != 429 for c in codes) > 0
    frame = pl.read_parquet(run.path / run.stages[0]["requests_file"])
    assert np.allclose(np.sort(frame["duration_ms"].to_numpy()),
                       sorted(float(r["response-time"]) * 1000 for r in rows))
    # relative offsets: the last response ends at the file's modification time
    last = frame["timestamp"].max()
    assert isinstance(last, dt.datetime)
    assert abs(last.timestamp() - written) < 2e-6
    span = max(float(r["offset"]) + float(r["response-time"]) for r in rows) \
        - min(float(r["offset"]) for r in rows)
    assert stage.duration_s == pytest.approx(span, abs=1e-3)
    record = run.stages[0]
    assert record["time_origin"] == "file mtime minus span"
    assert any("no answer" in note for note in record["import_notes"])


def test_hey_csv_without_rows_is_refused_and_nothing_is_written(runs_dir: Path) -> None:
    # hey's real output when no request was answered (a closed port): the header alone
    with pytest.raises(ImportFormatError, match="hey_refused.csv"):
        import_files([TOOLS / "hey_refused.csv"], label="x", out_dir=runs_dir)
    assert list(runs_dir.iterdir()) == []


def test_locust_stats_import_is_summary_only(runs_dir: Path) -> None:
    (total,) = [r for r in _rows(TOOLS / "locust_stats.csv") if r["Name"] == "Aggregated"]
    run = import_files([TOOLS / "locust_stats.csv", TOOLS / "locust_stats_history.csv"],
                       label="lo", out_dir=runs_dir)
    (stage,) = stage_metrics(load_run(run.path))
    assert stage.summary_only
    assert stage.requests == int(total["Request Count"])
    assert stage.errors == int(total["Failure Count"]) > 0
    assert stage.successes == stage.requests - stage.errors and stage.rate_limited == 0
    assert stage.throughput_rps == float(total["Requests/s"])
    assert stage.latency_all.p95_ms == float(total["95%"])
    assert stage.latency_all.p50_ms == float(total["50%"])
    # Locust's percentiles include its failures: none is claimed for the successes alone
    assert stage.latency_ok.p95_ms is None
    assert (run.path / "imported" / "locust_stats_history.csv").is_file()
    assert "Locust" in run.manifest["status_reason"]


@pytest.mark.parametrize(("content", "match"), [
    ("1795794626542,613,GET /jmeter,200,OK,users 1-2,text,true,156,2,2,u,610,0,522\n",
     "without its header"),
    ('<?xml version="1.0" encoding="UTF-8"?>\n<testResults version="1.2">\n', "in XML"),
    ("timeStamp,elapsed,label,responseMessage\n1795794626542,613,GET /,OK\n",
     "no responseCode"),
    ("Method,Name,Error,Occurrences\nGET,/locust,boom,1\n", "failures or exceptions"),
    ("timeStamp\telapsed\tlabel\n1795794626542\t613\tGET /\n", "tab-separated"),
    ("timeStamp,elapsed,label,responseCode,success\n2026/11/27 15:50:26.542,613,GET /,200,"
     "true\n", "timestamp_format=ms"),
    ("hello,world\n1,2\n", "not a load-test output"),
])
def test_bad_files_are_refused_naming_the_file(runs_dir: Path, tmp_path: Path, content: str,
                                               match: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    with pytest.raises(ImportFormatError, match=match) as raised:
        import_files([bad], label="x", out_dir=runs_dir)
    assert str(bad) in str(raised.value)
    assert list(runs_dir.iterdir()) == []


def test_locust_history_alone_or_mixed_is_refused(runs_dir: Path) -> None:
    with pytest.raises(ImportFormatError, match="Locust's outputs import on their own"):
        import_files([TOOLS / "locust_stats_history.csv"], label="x", out_dir=runs_dir)
    with pytest.raises(ImportFormatError, match="Locust's outputs import on their own"):
        import_files([TOOLS / "locust_stats.csv", TOOLS / "jmeter.jtl"], label="x",
                     out_dir=runs_dir)
    assert list(runs_dir.iterdir()) == []


def test_cli_import_of_other_tools(runs_dir: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    jtl, rows = str(TOOLS / "jmeter.jtl"), len(_rows(TOOLS / "jmeter.jtl"))
    assert main(["import", jtl, jtl, "--label", "two", "--out", str(runs_dir)]) == 0
    # without --stages another tool's files are one stage each
    run = load_run(capsys.readouterr().out.strip(), runs_dir)
    assert [(m.key, m.index, m.requests) for m in stage_metrics(run)] == [
        ("file-1", 1, rows), ("file-2", 2, rows)]
    assert main(["import", jtl, jtl, "--stages", "2,2", "--label", "rep",
                 "--out", str(runs_dir)]) == 0
    (stage,) = stage_metrics(load_run(capsys.readouterr().out.strip(), runs_dir))
    assert (stage.key, stage.level, stage.model) == ("s1-2vus", 2, "vus")
    assert stage.repeats == [1, 2] and stage.requests == 2 * rows
    bad = tmp_path / "x.jtl"
    bad.write_text('<?xml version="1.0"?>\n<testResults version="1.2">\n')
    assert main(["import", str(bad), "--label", "x", "--out", str(runs_dir)]) == 5
    assert "in XML" in capsys.readouterr().err
    assert main(["import", jtl, "--stages", "2,4", "--label", "x", "--out",
                 str(runs_dir)]) == 2
    assert "--stages names 2 level(s) for 1" in capsys.readouterr().err
    assert main(["import", jtl, "--stages", "ten", "--label", "x", "--out",
                 str(runs_dir)]) == 2
    assert len(list(runs_dir.iterdir())) == 2


def test_stages_name_levels_for_k6_files_and_summaries_too(runs_dir: Path) -> None:
    for levels in (None, [10, 20]):
        with pytest.raises(ImportFormatError, match="one tool's outputs per import"):
            import_files([DATA / "raw.csv", TOOLS / "hey.csv"], label="x", out_dir=runs_dir,
                         levels=levels)
    run = import_files([DATA / "raw.csv", DATA / "raw.csv"], label="k6", out_dir=runs_dir,
                       levels=[40, 80])
    assert [(m.key, m.level, m.requests) for m in stage_metrics(load_run(run.path))] == [
        ("s1-40vus", 40, 81), ("s2-80vus", 80, 81)]
    run = import_files([TOOLS / "locust_stats.csv"], label="lo", out_dir=runs_dir, levels=[2])
    (stage,) = stage_metrics(load_run(run.path))
    assert stage.key == "s1-2vus" and stage.level == 2 and stage.summary_only


def test_jtl_stage_by_all_threads_gives_one_stage_per_plateau(runs_dir: Path) -> None:
    # jmeter_ramp.jtl: 3 threads started over 6 s; in time order allThreads reads 1, 2, 3 and,
    # as the threads stop, 2 then 1 again (one sample each)
    path = TOOLS / "jmeter_ramp.jtl"
    rows = sorted(_rows(path), key=lambda r: int(r["timeStamp"]))
    runs: list[tuple[str, list[dict[str, str]]]] = []
    for row in rows:  # unbroken runs of one thread count, recomputed from the file
        if runs and runs[-1][0] == row["allThreads"]:
            runs[-1][1].append(row)
        else:
            runs.append((row["allThreads"], [row]))
    longest: dict[str, list[dict[str, str]]] = {}
    for threads, members in runs:
        if len(members) > len(longest.get(threads, [])):
            longest[threads] = members
    assert sorted(longest) == ["1", "2", "3"] and len(runs) == 5
    run = import_files([path], label="ramp", out_dir=runs_dir, stage_by="allThreads")
    stages = stage_metrics(load_run(run.path))
    assert [(m.key, m.level, m.requests) for m in stages] == [
        (f"s{i}-{t}vus", int(t), len(longest[t])) for i, t in enumerate(["1", "2", "3"], 1)]
    for stage in stages:
        members = longest[str(stage.level)]
        assert stage.rate_limited == sum(r["responseCode"] == "429" for r in members)
        assert stage.successes == sum(r["success"] == "true" for r in members)
    left_out = len(rows) - sum(len(v) for v in longest.values())
    assert left_out == 2
    assert any(f"{left_out} sample(s)" in note for note in run.stages[0]["import_notes"])
    with pytest.raises(UsageError, match="--stage-by"):
        import_files([TOOLS / "hey.csv"], label="x", out_dir=runs_dir, stage_by="allThreads")


def test_gzipped_hey_csv_keeps_the_files_time(runs_dir: Path, tmp_path: Path) -> None:
    packed = tmp_path / "hey.csv.gz"
    packed.write_bytes(gzip.compress((TOOLS / "hey.csv").read_bytes()))
    written = 1_790_000_000.0
    os.utime(packed, (written, written))
    run = import_files([packed], label="gz", out_dir=runs_dir)
    frame = pl.read_parquet(run.path / run.stages[0]["requests_file"])
    assert frame.height == len(_rows(TOOLS / "hey.csv"))
    last = frame["timestamp"].max()
    assert isinstance(last, dt.datetime) and abs(last.timestamp() - written) < 2e-6
