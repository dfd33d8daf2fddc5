"""The stage runner with real k6 against real servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import loadproof.execute as execute
import loadproof.k6bin as k6bin
import pytest
from loadproof.errors import K6NotFoundError, TargetError, UsageError
from loadproof.execute import run_stages
from loadproof.k6bin import find_k6
from loadproof.metrics import stage_metrics
from loadproof.plan import make_plan
from loadproof.progress import Progress
from loadproof.store import create_run_dir, load_run

from .helpers import tiny_server

QUIET = Progress(quiet=True)


def rate_plan(stages: str = "20,40", duration: str = "1s", **kw: object):  # type: ignore[no-untyped-def]
    return make_plan(stages, model="rate", stage_duration=duration, **kw)  # type: ignore[arg-type]


@pytest.mark.slow
def test_run_against_any_target(runs_dir: Path) -> None:
    with tiny_server((200, 200, 429, 503)) as url:
        run = run_stages(rate_plan(warmup="1s"), label="tiny", target=url, script="quick",
                         out_dir=runs_dir, progress=QUIET)
    assert run.status == "complete"
    m = load_run(run.path).manifest
    assert m["k6"]["version"] == "v1.1.0" and m["target"] == url
    assert m["script"]["name"] == "quick" and len(m["script"]["sha256"]) == 64
    assert m["machine_info"]["cpu_count"] and m["plan"]["levels"] == [20, 40]
    assert [s["status"] for s in m["stages"]] == ["complete", "complete"]
    for record in m["stages"]:
        for key in ("summary_file", "requests_file"):
            assert (run.path / record[key]).is_file()
        assert not (run.path / "stages" / record["dir"] / "raw.csv").exists()
    first, second = stage_metrics(load_run(run.path))
    # arrival rate x duration, warm-up excluded (a request or two of slack at the edges)
    assert 18 <= first.requests <= 22 and 38 <= second.requests <= 42
    assert first.rate_limited > 0 and first.errors > 0 and first.successes > 0


@pytest.mark.slow
def test_thresholds_crossed_keep_results(runs_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "strict.js"
    script.write_text("import http from 'k6/http';\n"
                      "export const options = { thresholds: { http_req_duration: ['p(95)<0'] } };\n"
                      "export default function () { http.get(__ENV.LP_TARGET); }\n")
    with tiny_server() as url:
        run = run_stages(make_plan("2", stage_duration="1s"), label="strict", target=url,
                         script=str(script), out_dir=runs_dir, progress=QUIET)
    (stage,) = run.stages
    assert stage["k6_exit_code"] == 99 and stage["thresholds"] == "crossed"
    assert stage["status"] == "complete" and stage["requests"] > 0
    assert (run.path / stage["summary_file"]).is_file()  # --summary-export for user scripts


@pytest.mark.slow
def test_k6_runs_with_recorded_gc_settings_that_the_user_can_override(
        runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "env.js"
    script.write_text("import http from 'k6/http';\n"
                      "export default function () {\n"
                      "  console.log(`gc ${__ENV.GOGC} ${__ENV.GOMEMLIMIT}`);\n"
                      "  http.get(__ENV.LP_TARGET);\n}\n")
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    monkeypatch.setenv("GOGC", "150")
    with tiny_server() as url:
        run = run_stages(make_plan("1", stage_duration="1s"), label="gc", target=url,
                         script=str(script), out_dir=runs_dir, progress=QUIET)
    go_env = load_run(run.path).manifest["k6"]["go_env"]
    assert go_env["GOGC"] == "150"  # the user's value wins
    assert go_env["GOMEMLIMIT"].endswith("MiB") and int(go_env["GOMEMLIMIT"][:-3]) >= 256
    log = (run.path / "stages" / run.stages[0]["dir"] / "k6.log").read_text()
    assert f"gc 150 {go_env['GOMEMLIMIT']}" in log  # what is recorded is what k6 ran with


def test_k6_memory_ceiling_follows_a_container_limit(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    limit = tmp_path / "memory.max"
    monkeypatch.setattr(k6bin, "CGROUP_MEMORY_MAX", limit)
    limit.write_text("1073741824\n")  # a 1 GiB container on a bigger machine
    assert k6bin.k6_gc_defaults() == {"GOGC": "400", "GOMEMLIMIT": "512MiB"}
    limit.write_text("max\n")  # no limit: half of the machine's memory
    machine = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert k6bin.k6_gc_defaults()["GOMEMLIMIT"] == f"{max(256, machine // 2 // 1024**2)}MiB"


@pytest.mark.parametrize(("body", "code", "message"), [
    ("export const options = { scenarios: { x: { executor: 'nope' } } };\n"
     "export default function () {}\n", 104, "unknown executor"),
    ("throw new Error('boom at init');\nexport default function () {}\n", 107, "boom at init"),
])
@pytest.mark.slow
def test_k6_errors_are_recorded_per_stage(runs_dir: Path, tmp_path: Path, body: str, code: int,
                                          message: str) -> None:
    script = tmp_path / "broken.js"
    script.write_text(body)
    with tiny_server() as url:
        run = run_stages(make_plan("1", stage_duration="1s"), label="broken", target=url,
                         script=str(script), out_dir=runs_dir, progress=QUIET)
    (stage,) = run.stages
    assert stage["k6_exit_code"] == code and stage["status"] == "failed"
    assert message in stage["k6_message"]
    assert run.status == "failed" and load_run(run.path).status == "failed"


def test_unreachable_target_fails_fast_and_sends_nothing(runs_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    with pytest.raises(TargetError, match=f"127.0.0.1:{port}.*no load was sent"):
        run_stages(rate_plan(), label="x", target=f"http://127.0.0.1:{port}", script="quick",
                   out_dir=runs_dir, progress=QUIET)
    assert time.monotonic() - started < 5
    assert list(runs_dir.iterdir()) == []


def test_target_that_does_not_speak_http(runs_dir: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def garbage() -> None:
        conn, _ = server.accept()
        conn.sendall(b"\x00\x01 not http at all\r\n\r\n")
        conn.close()

    threading.Thread(target=garbage, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    with pytest.raises(TargetError, match="does not speak HTTP"):
        run_stages(rate_plan(), label="x", target=url, script="quick", out_dir=runs_dir,
                   progress=QUIET)
    server.close()


def test_usage_errors(runs_dir: Path) -> None:
    with pytest.raises(UsageError, match="--script 'nope'"):
        run_stages(rate_plan(), label="x", target="http://127.0.0.1:1", script="nope",
                   out_dir=runs_dir, progress=QUIET)
    with pytest.raises(UsageError, match="exactly one of --target"):
        run_stages(rate_plan(), label="x", out_dir=runs_dir, progress=QUIET)


def test_missing_k6_says_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K6_BINARY", str(tmp_path / "absent"))
    with pytest.raises(K6NotFoundError, match="make install"):
        find_k6()
    monkeypatch.setenv("K6_BINARY", "/bin/false")
    from loadproof.k6bin import k6_version

    with pytest.raises(K6NotFoundError, match="not usable"):
        k6_version(find_k6())


@pytest.mark.slow
def test_crash_in_stage_three_keeps_stages_one_and_two(runs_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real = execute.csv_to_parquet
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(execute, "csv_to_parquet", flaky)
    with tiny_server() as url, pytest.raises(OSError, match="disk full"):
        run_stages(rate_plan("10,10,10"), label="crash", target=url, script="quick",
                   out_dir=runs_dir, progress=QUIET)
    (path,) = runs_dir.iterdir()
    run = load_run(path)
    assert run.status == "failed"
    assert [s["status"] for s in run.stages] == ["complete", "complete", "failed"]
    assert [m.requests > 0 for m in stage_metrics(run)] == [True, True]


@pytest.mark.slow
def test_ctrl_c_keeps_finished_stages_and_exits_130(runs_dir: Path) -> None:
    with tiny_server() as url:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadproof.cli", "run", "--target", url, "--label", "stop",
             "--stages", "10,10,10", "--model", "rate", "--stage-duration", "2s",
             "--script", "quick", "--out", str(runs_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        manifest = None
        while time.monotonic() < deadline:
            found = list(runs_dir.glob("*/manifest.json"))
            if found:
                manifest = json.loads(found[0].read_text())
                statuses = [s["status"] for s in manifest["stages"]]
                if statuses[:1] == ["complete"] and len(statuses) == 2:
                    break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    run = load_run(next(runs_dir.iterdir()))
    assert run.status == "incomplete"
    assert run.stages[0]["status"] == "complete"
    assert run.stages[1]["status"] == "incomplete"
    assert stage_metrics(run)[0].requests > 0


@pytest.mark.slow
def test_ctrl_c_before_a_stage_starts_k6_leaves_no_stage_running(
        runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []

    class InterruptOnSecond(execute.CsvTail):
        def __init__(self, path: str) -> None:
            made.append(path)
            if len(made) == 2:  # Ctrl-C lands after stage 2 is recorded, before k6 starts
                raise KeyboardInterrupt
            super().__init__(path)

    monkeypatch.setattr(execute, "CsvTail", InterruptOnSecond)
    with tiny_server() as url, pytest.raises(execute.Interrupted) as caught:
        run_stages(rate_plan("10,10"), label="early", target=url, script="quick",
                   out_dir=runs_dir, progress=QUIET)
    run = load_run(caught.value.run.path)
    assert run.status == "incomplete"
    assert [s["status"] for s in run.stages] == ["complete", "incomplete"]
    assert "interrupted" in run.stages[1]["status_reason"]


def test_run_ids_never_collide(tmp_path: Path) -> None:
    ids = {create_run_dir(tmp_path, "same")[0] for _ in range(50)}
    assert len(ids) == 50


@pytest.mark.slow
def test_cli_run_prints_run_dir_last(runs_dir: Path) -> None:
    with tiny_server() as url:
        out = subprocess.run(
            [sys.executable, "-m", "loadproof.cli", "run", "--target", url, "--label", "cli",
             "--stages", "5", "--model", "rate", "--stage-duration", "1s", "--script", "quick",
             "--out", str(runs_dir)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert Path(last).parent == runs_dir and (Path(last) / "manifest.json").is_file()
    assert "Stage 1 (5 req/s): complete" in out.stderr
