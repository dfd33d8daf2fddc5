"""Fault stages: parsing and checks, command faults against a server of known recovery time,
the built-in db-outage and db-freeze on the real embedded PostgreSQL, and what is claimed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from loadproof import resilience_report
from loadproof.compare import compare_runs
from loadproof.errors import ExperimentError, UsageError
from loadproof.execute import run_stages
from loadproof.experiment import load_experiment
from loadproof.faults import FaultSpec, check_faults, parse_fault, parse_fault_arg
from loadproof.handoff import comparison_from_dict
from loadproof.plan import make_plan
from loadproof.progress import Progress
from loadproof.resilience import (
    ArmResilience,
    FaultFigures,
    arm_resilience,
    compare_metric,
    compare_resilience,
    run_figures,
)
from loadproof.store import load_run

QUIET = Progress(quiet=True)
# The test server comes back 1.5 s after its stop command reaches it. The fault's end is
# recorded when that command has exited, a little after, so the server is healthy again 1.0 to
# 1.5 s after the recorded end, and the first whole second that meets the SLO starts at 2 s:
# half a second of margin on both sides of the 1 s resolution, for a busy machine's delays.
COMES_BACK_AFTER_S = 1.5
RECOVERY_S = 2  # the recovery the figures must measure
SLO = {"slo_p95_ms": 400.0, "slo_success": 0.99}


# --- parsing and checks ------------------------------------------------------------------

def test_fault_arg_keeps_commas_inside_commands() -> None:
    spec = parse_fault_arg("name=cut,stage=s2-50vus,at=5s,duration=8s,"
                           "start=echo a,b > /dev/null,stop=printf 'x,y',timeout=10s")
    assert spec == FaultSpec(name="cut", stage="s2-50vus", at_s=5.0, duration_s=8.0,
                             start="echo a,b > /dev/null", stop="printf 'x,y'", timeout_s=10.0)
    assert parse_fault_arg("stage=2,at=1s,duration=2s,action=db-freeze").name == "db-freeze"


@pytest.mark.parametrize(("text", "message"), [
    ("stage=1,at=1s,duration=2s,color=red,action=db-outage", "unknown key 'color'"),
    ("at=1s,duration=2s,action=db-outage", "stage is missing"),
    ("stage=1,at=1s,duration=2s,action=db-explode", "not a built-in action"),
    ("stage=1,at=1s,duration=2s,action=db-outage,start=true,stop=true", "not both"),
    ("stage=1,at=1s,duration=2s,start=true", "both a start and a stop"),
    ("stage=1,at=1s,duration=0s,action=db-outage", "longer than 0"),
    ("stage=0,at=1s,duration=1s,action=db-outage", "start at 1"),
    ("stage=1,at=soon,duration=1s,action=db-outage", "at"),
    ("nonsense", "key=value"),
])
def test_bad_fault_specs_name_the_key(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_fault_arg(text)


def test_fault_checks_against_the_plan_and_the_arm() -> None:
    plan = make_plan("10,50", stage_duration="10s")
    outage = parse_fault({"stage": 2, "at": "2s", "duration": "3s", "action": "db-outage"})
    check_faults([outage], plan, has_service=True, script_driven=False)
    with pytest.raises(UsageError, match="--profile"):
        check_faults([outage], plan, has_service=False, script_driven=False)
    with pytest.raises(UsageError, match=r"stage 's3-10vus' is not in the plan"):
        check_faults([parse_fault({"stage": "s3-10vus", "at": 1, "duration": 1,
                                   "action": "db-outage"})], plan, has_service=True,
                     script_driven=False)
    with pytest.raises(UsageError, match="does not end inside s2-50vus"):
        check_faults([parse_fault({"stage": 2, "at": "5s", "duration": "5s",
                                   "action": "db-outage"})], plan, has_service=True,
                     script_driven=False)
    with pytest.raises(UsageError, match="one fault per stage"):
        check_faults([outage, parse_fault({"name": "b", "stage": "s2-50vus", "at": 1,
                                           "duration": 1, "action": "db-freeze"})],
                     plan, has_service=True, script_driven=False)
    with pytest.raises(UsageError, match="script-driven"):
        check_faults([outage], plan, has_service=True, script_driven=True)


def test_experiment_faults_are_checked_before_any_load(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    base = ("title: t\narms:\n  a: {profile: baseline}\n  b: {target: http://127.0.0.1:9}\n"
            "stages: [10]\nstage_duration: 10s\n")
    path.write_text(base + "faults:\n  - {stage: 1, at: 2s, duration: 2s, action: db-outage}\n")
    with pytest.raises(ExperimentError, match="arm b.*--profile"):
        load_experiment(path)
    path.write_text(base + "faults:\n  - {stage: 1, at: 2s, duration: 2s, start: 'true'}\n")
    with pytest.raises(ExperimentError, match=r"faults\[0\].*start and a stop"):
        load_experiment(path)
    path.write_text(base + "faults:\n  - {stage: 1, at: 2s, duration: 2s, start: 'true', "
                           "stop: 'true'}\n")
    assert load_experiment(path).faults[0].start == "true"


def test_the_default_experiment_has_a_resilience_scenario() -> None:
    experiment = load_experiment()
    assert [f.action for f in experiment.faults] == ["db-outage"]


def test_bad_fault_flag_exits_2(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "loadproof.cli", "run", "--target",
                          "http://127.0.0.1:9", "--label", "x", "--fault", "stage=1,at=1s",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "duration is missing" in out.stderr
    assert not list(tmp_path.iterdir())


# --- the comparison's honesty rules, on figures ------------------------------------------

def _figures(recovery: list[float | None], success: list[float]) -> list[FaultFigures]:
    return [FaultFigures(fault="f", stage="s1-10vus", repeat=i + 1, fault_started_at="",
                         fault_stopped_at="", fault_s=4.0, requests_during_fault=400,
                         success_during_fault=s, p95_during_fault_ms=5.0 + i,
                         failed_during_fault=int(400 * (1 - s)), time_to_first_error_s=0.1,
                         recovery_s=r, recovered=r is not None,
                         recovery_lower_bound_s=None if r is not None else 6.0,
                         failed_outside_fault=0, acknowledged_writes_lost=0,
                         writes_unverified=0)
            for i, (r, s) in enumerate(zip(recovery, success, strict=True))]


def _compare(metric: str, base: list[FaultFigures], cand: list[FaultFigures]):  # type: ignore[no-untyped-def]
    arm_b: ArmResilience = arm_resilience(base)[0]
    arm_c: ArmResilience = arm_resilience(cand)[0]
    return compare_metric(metric, base, cand, arm_b, arm_c)


def test_recovery_verdicts_follow_the_honesty_rules() -> None:
    slow = _figures([8.0, 9.0, 8.0], [0.0, 0.0, 0.0])
    fast = _figures([1.0, 0.0, 1.0], [0.9, 0.92, 0.91])
    result = _compare("recovery_s", slow, fast)
    assert result.verdict == "improved" and result.difference is not None \
        and result.difference < -6
    assert _compare("success_during_fault", slow, fast).verdict == "improved"
    # fewer than 3 repeats: a measurement, never a verdict
    assert _compare("recovery_s", slow[:2], fast[:2]).verdict == "not replicated"
    # a recovery that never happened is never "improved", whatever the baseline did
    never = _figures([None, None, None], [1.0, 1.0, 1.0])
    result = _compare("recovery_s", never, never)
    assert result.verdict != "improved" and result.candidate is None
    assert _compare("recovery_s", fast, never).verdict == "regressed"
    # the baseline never recovered: its figure is a lower bound, and so is the ratio
    result = _compare("recovery_s", never, _figures([1.0, 2.0, 1.0], [0.9] * 3))
    assert result.ratio_bound == "at least" and result.verdict == "improved"
    assert arm_resilience(never)[0].recovery_s is None
    assert arm_resilience(never)[0].recovery_lower_bound_s == 6.0


# --- command faults against a server of known recovery time -----------------------------

@contextmanager
def fault_server(recover_after_s: float) -> Iterator[tuple[str, dict[str, float]]]:
    """A server answering 200 unless down: ``/control/down`` takes it down (503 at once),
    ``/control/up`` brings it back ``recover_after_s`` seconds later (``?never=1``: never)."""
    state = {"healthy_at": 0.0, "up_called_at": 0.0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            now = time.time()
            with lock:
                if self.path == "/control/down":
                    state["healthy_at"] = float("inf")
                elif self.path.startswith("/control/up"):
                    state["up_called_at"] = now
                    state["healthy_at"] = float("inf") if "never" in self.path \
                        else now + recover_after_s
                healthy = now >= state["healthy_at"]
            status = 200 if healthy or self.path.startswith("/control") else 503
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def _get(path: str) -> str:
    return (f"{sys.executable} -c \"import os, urllib.request; "
            f"urllib.request.urlopen(os.environ['LP_TARGET'] + '{path}').read()\"")


@pytest.mark.slow
def test_command_fault_measures_the_known_recovery_time(runs_dir: Path) -> None:
    env_dump = "env | grep '^LP_' | sort > \"$LP_RUN_DIR/env-$LP_STAGE.txt\"; "
    faults = [
        parse_fault({"name": "cut", "stage": 1, "at": "2s", "duration": "2s",
                     "start": env_dump + _get("/control/down"), "stop": _get("/control/up")}),
        parse_fault({"name": "cut-forever", "stage": 2, "at": "1s", "duration": "1s",
                     "start": _get("/control/down"), "stop": _get("/control/up?never=1")}),
    ]
    plan = make_plan("5,5", model="vus", stage_duration="12s")
    with fault_server(COMES_BACK_AFTER_S) as (url, _):
        run = run_stages(plan, label="cmd", target=url, script="quick", out_dir=runs_dir,
                         progress=QUIET, fault_specs=faults)
    run = load_run(run.path)
    assert run.status == "complete", run.manifest["status_reason"]
    first, second = run.stages
    fault = first["fault"]
    assert fault["injected"] and fault["start"]["exit_code"] == 0
    assert fault["stop"]["exit_code"] == 0
    assert (run.path / fault["start"]["output_file"]).is_file()
    env = (run.path / "env-s1-5vus.txt").read_text()
    for line in ("LP_ARM=cmd", f"LP_TARGET={url}", "LP_STAGE=s1-5vus",
                 f"LP_RUN_DIR={run.path.resolve()}"):
        assert line in env.splitlines()
    figures = {f.stage: f for f in run_figures(run, **SLO)}
    known = figures["s1-5vus"]
    # the measured recovery is the known one, at the 1 s resolution
    assert known.recovered and known.recovery_s == RECOVERY_S, known
    # the window opens when the start command starts: requests answered while it starts and
    # reaches the server (a Python start, some 0.1-0.5 s on a busy machine) succeed, and a
    # request in flight as the server flips can end on either side; the rest fail
    assert known.success_during_fault is not None and known.success_during_fault <= 0.10, known
    assert known.failed_during_fault > 0
    assert known.time_to_first_error_s is not None and known.time_to_first_error_s < 1.0
    assert known.failed_outside_fault <= 2
    # the 2 s fault plus its stop command (a Python start: slow on a busy machine)
    assert 1.9 <= known.fault_s <= 4.0
    never = figures["s2-5vus"]
    assert not never.recovered and never.recovery_s is None
    assert never.recovery_lower_bound_s is not None and never.recovery_lower_bound_s >= 5
    assert never.failed_outside_fault > 0
    result = compare_resilience(run, run, **SLO)
    assert result is not None and len(result["comparison"]) == 2
    assert second["status"] == "complete"
    # the report's notebook reads the comparison back from comparison.json: the resilience
    # figures come back with it, and its section reads the same
    comparison = compare_runs(run, run)
    again = comparison_from_dict(json.loads(json.dumps(comparison.to_dict(), default=str)))
    assert again.resilience is not None
    assert resilience_report.section(again) == resilience_report.section(comparison)
    assert resilience_report.markdown(again) == resilience_report.markdown(comparison)


@pytest.mark.slow
def test_a_failing_start_aborts_the_stage_and_its_stop_still_runs(runs_dir: Path) -> None:
    marker = runs_dir / "stopped"
    fault = parse_fault({"name": "broken", "stage": 1, "at": "1s", "duration": "3s",
                         "start": "echo cannot reach the switch; exit 3",
                         "stop": f"touch {marker}"})
    with fault_server(0) as (url, _):
        run = run_stages(make_plan("5", stage_duration="8s"), label="bad", target=url,
                         script="quick", out_dir=runs_dir, progress=QUIET, fault_specs=[fault])
    record = load_run(run.path).stages[0]
    assert run.status == "failed"
    assert record["status"] == "failed"
    assert "fault broken: its start failed (exit 3: cannot reach the switch)" in \
        record["status_reason"]
    assert marker.is_file() and record["fault"]["stop"]["exit_code"] == 0
    # the stage was cut short, not run to its end
    assert record["measured_s"] < 6


# --- built-in actions on the real embedded PostgreSQL ------------------------------------

def _postgres_left(pids: list[int]) -> list[str]:
    left = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {proc.name()} {proc.status()}")
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.mark.slow
def test_db_outage_and_freeze_on_the_embedded_database(runs_dir: Path) -> None:
    faults = [parse_fault({"stage": 1, "at": "1s", "duration": "1s", "action": "db-outage"}),
              parse_fault({"stage": 2, "at": "1s", "duration": "1s", "action": "db-freeze"})]
    run = run_stages(make_plan("5,5", stage_duration="12s"), label="pg", profile="optimized",
                     script="journey", out_dir=runs_dir, progress=QUIET, fault_specs=faults)
    run = load_run(run.path)
    assert run.status == "complete", run.manifest["status_reason"]
    assert "service_exits" not in run.manifest
    outage, freeze = (r["fault"] for r in run.stages)
    assert outage["injected"] and freeze["injected"]
    assert "server stopped" in (run.path / outage["start"]["output_file"]).read_text()
    frozen = (run.path / freeze["start"]["output_file"]).read_text()
    pids = [int(p) for p in re.findall(r"\d+", frozen.split(":", 1)[1])]
    assert pids and "SIGCONT" in (run.path / freeze["stop"]["output_file"]).read_text()
    figures = {f.fault: f for f in run_figures(run, **SLO)}
    down, hung = figures["db-outage"], figures["db-freeze"]
    # the optimized profile's breaker answers at once while the database is down; on a hung
    # database requests wait (its 5 s deadline is longer than the freeze)
    assert down.failed_during_fault > 0 and down.success_during_fault is not None \
        and down.success_during_fault < 0.5, down
    assert hung.p95_during_fault_ms is not None \
        and hung.p95_during_fault_ms >= 500 * hung.fault_s, hung
    for f in (down, hung):
        # it comes back inside the stage, and no acknowledged write is lost
        assert f.recovered and f.acknowledged_writes_lost == 0, f
    # nothing is left: no database process, none stopped
    assert _postgres_left(pids) == []


@pytest.mark.slow
def test_ctrl_c_during_a_freeze_resumes_and_stops_the_database(runs_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadproof.cli", "run", "--profile", "baseline", "--label",
         "frozen", "--stages", "5", "--stage-duration", "30s", "--out", str(runs_dir),
         "--fault", "stage=1,at=1s,duration=25s,action=db-freeze"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    started: list[Path] = []
    while time.monotonic() < deadline and not started:
        started = list(runs_dir.glob("*/stages/*/fault-db-freeze-start.log"))
        time.sleep(0.2)
    assert started, "the fault never started"
    time.sleep(0.5)
    text = started[0].read_text()
    pids = [int(p) for p in re.findall(r"\d+", text.split(":", 1)[1])]
    assert all(psutil.Process(p).status() == psutil.STATUS_STOPPED for p in pids[:1])
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    record = load_run(next(runs_dir.iterdir())).stages[0]
    assert record["fault"]["stop"]["exit_code"] == 0
    assert json.dumps(record["fault"]).count("SIGCONT") == 0  # the log holds the details
    assert "SIGCONT" in (started[0].parent / "fault-db-freeze-stop.log").read_text()
    time.sleep(1)
    assert _postgres_left(pids) == []
