"""k6's raw output while a stage runs (runner/rawpipe.py, runner/rawdrain.py): compressed as k6
writes it, followed live, converted to the same requests, and no process left behind."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import polars as pl
import pytest
from loadproof.capacity import EarlyStop, TrialStage, make_settings
from loadproof.execute import run_stages
from loadproof.ingest import csv_to_parquet
from loadproof.plan import make_plan
from loadproof.progress import CsvTail, Progress
from loadproof.rawpipe import FIFO_NAME, Follow, RawSink
from loadproof.store import load_run

from .conftest import DATA
from .helpers import tiny_server


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _flushed_gzip(chunks: list[bytes]) -> list[bytes]:
    """The bytes a sync-flushing gzip writer appends after each chunk."""
    deflate = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return [deflate.compress(c) + deflate.flush(zlib.Z_SYNC_FLUSH) for c in chunks]


def test_follow_reads_a_growing_gzip_as_it_grows(tmp_path: Path) -> None:
    raw = (DATA / "raw.csv").read_bytes()
    cuts = [0, 1, 37, len(raw) // 2 + 11, len(raw)]  # a lone byte, inside the header, a line
    chunks = [raw[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    target = tmp_path / "raw.csv.gz"
    follow, tail = Follow(target), CsvTail(str(target))
    seen = b""
    for piece in _flushed_gzip(chunks):
        with open(target, "ab") as handle:
            handle.write(piece)
        seen += follow.read()
        tail.poll()
    assert seen == raw
    assert tail.requests == 122


def test_early_stop_reads_a_gzipped_raw_output(tmp_path: Path) -> None:
    from .test_capacity import HEADER, csv_rows

    raw = tmp_path / "raw.csv.gz"
    stop = EarlyStop(raw, make_settings(slo_p95_ms=100, slo_success=0.99, min_rate=10,
                                        max_rate=20_000),
                     TrialStage(1, 100, "rate", 10.0, 0.0))
    assert stop(1.0) is None  # no file yet
    raw.write_bytes(b"".join(_flushed_gzip([(HEADER + csv_rows(150, ms=900.0)).encode()])))
    why = stop(2.0)  # the stream is not ended: a live reader sees it up to the last flush
    assert why is not None and "p95 cannot meet" in why


def test_sink_compresses_what_a_writer_sends_and_shows_it_before_the_writer_ends(
        tmp_path: Path) -> None:
    raw = tmp_path / "raw.csv.gz"
    data = (DATA / "raw.csv").read_bytes()
    with RawSink(raw) as sink:
        fifo = tmp_path / FIFO_NAME
        assert sink.fifo == fifo and fifo.exists()
        # a writer as k6 opens it (read-write, create, truncate), a burst about once a second
        writer = os.open(fifo, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(writer, data[:50_000])
            follow = Follow(raw)
            seen = b""
            deadline = time.monotonic() + 10
            while len(seen) < 50_000 and time.monotonic() < deadline:
                time.sleep(0.1)
                seen += follow.read()
            assert seen == data[:50_000]  # flushed while the writer still holds the pipe
            os.write(writer, data[50_000:])
        finally:
            os.close(writer)
        sink.stop()
    assert gzip.decompress(raw.read_bytes()) == data
    assert not fifo.exists()
    assert _processes_naming(str(fifo)) == []


def test_sink_of_a_writer_that_never_came_ends_quickly_and_writes_nothing(
        tmp_path: Path) -> None:
    raw = tmp_path / "raw.csv.gz"
    started = time.monotonic()
    with RawSink(raw):
        pass
    assert time.monotonic() - started < 5
    assert not raw.exists() and not (tmp_path / FIFO_NAME).exists()


def test_sink_reports_a_file_it_cannot_write_and_never_blocks_the_writer(
        tmp_path: Path) -> None:
    raw = tmp_path / "raw.csv.gz"
    raw.mkdir()  # a folder where the file should go: every write fails
    sink = RawSink(raw).start()
    writer = os.open(sink.fifo, os.O_RDWR)
    try:  # far more than a pipe holds: the drain reads on although it cannot write
        for _ in range(64):
            os.write(writer, b"metric_name,timestamp,metric_value\n" * 1000)
    finally:
        os.close(writer)
    with pytest.raises(OSError, match="could not write k6's raw output"):
        sink.finish()
    assert not sink.fifo.exists()


class Recorder(Progress):
    def __init__(self) -> None:
        super().__init__(quiet=False, live=True)
        self.statuses: list[str] = []
        self.lines: list[str] = []

    def status(self, text: str, *, every_s: float = 5.0) -> None:
        self.statuses.append(text)

    def line(self, text: str) -> None:
        self.lines.append(text)

    def done(self) -> None:
        pass


@pytest.mark.slow
def test_a_low_rate_stage_is_followed_live_and_converts_as_plain_csv(runs_dir: Path) -> None:
    progress = Recorder()
    with tiny_server((200, 200, 429, 503)) as url:
        run = run_stages(make_plan("20", model="rate", stage_duration="4s"), label="gz",
                         target=url, script="quick", out_dir=runs_dir, progress=progress,
                         keep_raw=True)
    assert run.status == "complete"
    (record,) = load_run(run.path).stages
    assert record["raw_output"] == "csv.gz"
    assert record["raw_file"] == f"stages/{record['dir']}/raw.csv.gz"
    # the live line counted requests while k6 ran, at 20 requests/s (k6's own gzip output
    # shows nothing until the test ends at this rate)
    live = [int(s.split("requests ")[1].split()[0]) for s in progress.statuses]
    assert max(live[:-1]) > 0
    stage_dir = run.path / "stages" / record["dir"]
    assert not (stage_dir / FIFO_NAME).exists()
    raw = stage_dir / "raw.csv.gz"
    plain = stage_dir / "plain.csv"
    plain.write_bytes(gzip.decompress(raw.read_bytes()))
    assert raw.stat().st_size < plain.stat().st_size / 4
    from_gz = csv_to_parquet(raw, stage_dir / "a.parquet", stage=record["key"], repeat=1)
    from_plain = csv_to_parquet(plain, stage_dir / "b.parquet", stage=record["key"], repeat=1)
    assert from_gz == from_plain == record["requests"] > 0
    stored = pl.read_parquet(run.path / record["requests_file"])
    assert pl.read_parquet(stage_dir / "a.parquet").equals(stored)
    assert pl.read_parquet(stage_dir / "b.parquet").equals(stored)


@pytest.mark.slow
def test_plain_csv_is_still_a_choice(runs_dir: Path) -> None:
    with tiny_server() as url:
        proc = subprocess.run(
            [sys.executable, "-m", "loadproof.cli", "run", "--target", url, "--label", "plain",
             "--stages", "10", "--model", "rate", "--stage-duration", "1s", "--script", "quick",
             "--out", str(runs_dir), "--raw-output", "csv", "--keep-raw"],
            capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (record,) = load_run(Path(proc.stdout.strip().splitlines()[-1])).stages
    assert record["raw_output"] == "csv" and record["raw_file"].endswith("/raw.csv")
    assert record["requests"] > 0


@pytest.mark.slow
def test_loadproof_killed_mid_stage_leaves_k6_and_the_drain_to_end_by_themselves(
        runs_dir: Path) -> None:
    """kill -9 of loadproof mid-stage: k6 runs on to its stage's end (as with a plain CSV),
    the drain reads on so k6 never blocks on the pipe, and both exit; the gzip is whole."""
    with tiny_server() as url:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadproof.cli", "run", "--target", url, "--label", "kill",
             "--stages", "20", "--model", "rate", "--stage-duration", "3s", "--script",
             "quick", "--out", str(runs_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            raws: list[Path] = []
            while time.monotonic() < deadline and not raws:
                raws = [p for p in runs_dir.glob("*/stages/*/raw.csv.gz")
                        if p.stat().st_size > 100]
                time.sleep(0.1)
            assert raws, "k6 wrote nothing"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        run_dir = raws[0].parents[2]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _processes_naming(str(run_dir)):
            time.sleep(0.2)
        left = _processes_naming(str(run_dir))
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert left == []
    text = gzip.decompress(raws[0].read_bytes()).decode()
    assert text.startswith("metric_name,") and text.count("\nhttp_req_duration,") > 20
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"][0]["status"] == "running"  # what a killed run leaves, as before
