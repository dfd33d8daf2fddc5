"""User scripts in both load modes, with real k6 against servers on 127.0.0.1: loadproof
drives the load (its stages and executors) or the script does (its scenarios or
options.stages as written); thresholds, aborts, measured windows, warm-up, provenance, and
k6 stopped on every exit path."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import loadproof.execute as execute
import polars as pl
import pytest
from loadproof.compare import compare_runs
from loadproof.errors import UsageError
from loadproof.execute import run_stages
from loadproof.metrics import stage_metrics
from loadproof.plan import make_plan
from loadproof.progress import Progress
from loadproof.render import comparison_table
from loadproof.store import Run, load_run
from loadproof.summary import render_markdown

from .helpers import tiny_server

pytestmark = pytest.mark.slow
QUIET = Progress(quiet=True)


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def summary(run: Run, record: dict) -> dict:  # type: ignore[type-arg]
    metrics: dict = json.loads((run.path / record["summary_file"]).read_text())["metrics"]  # type: ignore[type-arg]
    return metrics


# in the style of k6's examples: two scenarios with their own exec functions, a hard-coded
# URL, thresholds on per-scenario sub-metrics
SCENARIOS_JS = """
import http from 'k6/http';
import { sleep } from 'k6';

export const options = {
  scenarios: {
    browse: { executor: 'constant-vus', vus: 2, duration: '2s', exec: 'browse' },
    buy: { executor: 'constant-arrival-rate', rate: 10, timeUnit: '1s', duration: '2s',
           preAllocatedVUs: 4, startTime: '2s', exec: 'buy' },
  },
  thresholds: {
    'http_reqs{scenario:browse}': ['count>0'],
    'http_reqs{scenario:buy}': ['count>0'],
    'http_req_duration': ['p(95)<1000'],
  },
};

export function browse() { http.get('BASE/browse'); sleep(0.1); }
export function buy() { http.get('BASE/buy'); }
"""

STAGES_JS = """
import http from 'k6/http';
import { sleep } from 'k6';

export const options = {
  stages: [
    { duration: '2s', target: 2 },
    { duration: '2s', target: 4 },
  ],
};

export default function () { http.get(__ENV.LP_TARGET + '/step'); sleep(0.1); }
"""

PLAIN_JS = """
import http from 'k6/http';
import { sleep } from 'k6';
export default function () { http.get(__ENV.LP_TARGET + '/plain'); sleep(0.1); }
"""


@pytest.fixture(scope="module")
def server() -> object:
    with tiny_server() as url:
        yield url


def test_script_drives_the_load_one_stage_per_scenario(tmp_path: Path, runs_dir: Path,
                                                       server: str) -> None:
    script = write(tmp_path, "shop.js", SCENARIOS_JS.replace("BASE", server))
    run = run_stages(make_plan("10"), label="shop", target=server, script=str(script),
                     out_dir=runs_dir, progress=QUIET, stages_given=False)
    stored = load_run(run.path)
    manifest = stored.manifest
    assert manifest["load_mode"] == "script" and manifest["plan"]["model"] == "script"
    assert [s["key"] for s in manifest["plan"]["stages"]] == ["s1-browse", "s2-buy"]
    browse, buy = stored.stages
    assert (browse["level"], browse["model"]) == (2, "vus")
    assert (buy["level"], buy["model"]) == (10, "rate")
    assert {browse["status"], buy["status"]} == {"complete"} and stored.status == "complete"
    assert browse["k6_exit_code"] == 0
    # counts match k6's own per-scenario counts exactly
    k6 = summary(stored, browse)
    assert browse["requests"] == k6["http_reqs{scenario:browse}"]["count"] > 0
    assert buy["requests"] == k6["http_reqs{scenario:buy}"]["count"] > 0
    assert browse["requests"] + buy["requests"] == k6["http_reqs"]["count"]
    assert [m.key for m in stage_metrics(stored)] == ["s1-browse", "s2-buy"]
    # every threshold with its result
    results = {(t["metric"], t["threshold"]): t["ok"] for t in browse["threshold_results"]}
    assert results == {("http_reqs{scenario:browse}", "count>0"): True,
                       ("http_reqs{scenario:buy}", "count>0"): True,
                       ("http_req_duration", "p(95)<1000"): True}
    # provenance: the hard-coded URL is the target's host, so no warning
    host = server.removeprefix("http://")
    assert browse["hosts"] == {host: k6["http_reqs"]["count"]}
    assert manifest["warnings"] == []
    # the measured window: buy starts 2 s into the test and ran its full 2 s
    assert buy["measured_s"] == 2.0 and buy["load_started_at"] > browse["load_started_at"]
    assert buy["first_request_at"] >= buy["load_started_at"]
    assert browse["vus_observed_max"] == 2  # k6's vus samples while browse ran alone


def test_two_script_driven_runs_compare_stage_by_stage(tmp_path: Path, runs_dir: Path,
                                                      server: str) -> None:
    script = write(tmp_path, "steps.js", STAGES_JS)
    runs = [run_stages(make_plan("10"), label=label, target=server, script=str(script),
                       out_dir=runs_dir, progress=QUIET, plan_mode="script",
                       stages_given=False) for label in ("a", "b")]
    first = load_run(runs[0].path)
    assert [s["key"] for s in first.stages] == ["s1-2vus", "s2-4vus"]
    k6 = summary(first, first.stages[0])
    assert sum(s["requests"] for s in first.stages) == k6["http_reqs"]["count"]
    assert all(s["requests"] > 0 for s in first.stages)
    # the levels reached, from k6's vus samples (about one a second) within each step
    assert first.stages[0]["vus_observed_max"] in (1, 2)
    assert first.stages[1]["vus_observed_max"] >= 3
    comparison = compare_runs(first, load_run(runs[1].path))
    assert [s.key for s in comparison.stages] == ["s1-2vus", "s2-4vus"]
    assert not any("plans differ" in g for g in comparison.guards)


def test_a_script_with_its_own_shape_is_refused_when_loadproof_drives(tmp_path: Path,
                                                                      runs_dir: Path,
                                                                      server: str) -> None:
    script = write(tmp_path, "steps.js", STAGES_JS)
    with pytest.raises(UsageError, match=r"options\.stages \(2 steps\).*--plan script.*"
                                         r"--override-script-options"):
        run_stages(make_plan("5"), label="x", target=server, script=str(script),
                   out_dir=runs_dir, progress=QUIET)
    shop = write(tmp_path, "shop.js", SCENARIOS_JS.replace("BASE", server))
    with pytest.raises(UsageError, match=r"options\.scenarios \(browse, buy\)"):
        run_stages(make_plan("5"), label="x", target=server, script=str(shop),
                   out_dir=runs_dir, progress=QUIET, plan_mode="stages", stages_given=False)
    with pytest.raises(UsageError, match="--warmup and a script-driven run conflict"):
        run_stages(make_plan("5", warmup="1s"), label="x", target=server, script=str(script),
                   out_dir=runs_dir, progress=QUIET, stages_given=False)
    # overriding a script whose scenarios run two functions and no default: which one?
    with pytest.raises(UsageError, match="exports no default function.*browse, buy"):
        run_stages(make_plan("5"), label="x", target=server, script=str(shop),
                   out_dir=runs_dir, progress=QUIET, override_script_options=True)
    assert list(runs_dir.iterdir()) == []  # refused before any load or run folder


def test_override_drives_a_script_exec_function_at_the_planned_rate(tmp_path: Path,
                                                                    runs_dir: Path,
                                                                    server: str) -> None:
    # its own scenario names its exec function (k6 exit 104 before) and its own rate (2/s)
    script = write(tmp_path, "api.js", f"""
import http from 'k6/http';
export const options = {{
  scenarios: {{ api: {{ executor: 'constant-arrival-rate', rate: 2, timeUnit: '1s',
                       duration: '2s', preAllocatedVUs: 2, exec: 'api' }} }},
}};
export function api() {{ http.get('{server}/api'); }}
""")
    run = run_stages(make_plan("20", model="rate", stage_duration="2s"), label="api",
                     target=server, script=str(script), out_dir=runs_dir, progress=QUIET,
                     override_script_options=True)
    stored = load_run(run.path)
    (stage,) = stored.stages
    assert stage["k6_exit_code"] == 0 and stage["status"] == "complete"
    assert stored.manifest["script"]["overridden_options"] == ["options.scenarios (api)"]
    k6 = summary(stored, stage)
    # the planned 20 req/s for 2 s was sent (not the script's 2/s), as k6 itself counted
    assert stage["requests"] == k6["http_reqs{scenario:main}"]["count"]
    assert 38 <= stage["requests"] <= 42
    assert stage["measured_s"] == 2.0


def test_warmup_requests_of_a_user_script_are_not_counted(tmp_path: Path, runs_dir: Path,
                                                          server: str) -> None:
    script = write(tmp_path, "plain.js", PLAIN_JS)
    run = run_stages(make_plan("2", stage_duration="1s", warmup="1s"), label="warm",
                     target=server, script=str(script), out_dir=runs_dir, progress=QUIET,
                     keep_raw=True)
    stored = load_run(run.path)
    (stage,) = stored.stages
    k6 = summary(stored, stage)
    measured = k6["http_reqs{scenario:main}"]["count"]
    assert 0 < measured < k6["http_reqs"]["count"]  # the warm-up sent requests too
    assert stage["requests"] == measured
    frame = pl.read_parquet(stored.path / stage["requests_file"])
    assert frame["timestamp"].min() >= pl.Series([stage["load_started_at"]]).str.to_datetime(
        time_zone="UTC", time_unit="us")[0]


def test_threshold_abort_is_recorded_with_the_measured_window(tmp_path: Path,
                                                              runs_dir: Path) -> None:
    script = write(tmp_path, "strict.js", """
import http from 'k6/http';
export const options = {
  thresholds: {
    http_req_failed: [{ threshold: 'rate<0.01', abortOnFail: true }],
    http_req_duration: ['p(95)<2000'],
  },
};
export default function () { http.get(__ENV.LP_TARGET + '/fails'); }
""")
    with tiny_server((500,)) as url:
        run = run_stages(make_plan("10", model="rate", stage_duration="8s"), label="abort",
                         target=url, script=str(script), out_dir=runs_dir, progress=QUIET)
    stored = load_run(run.path)
    (stage,) = stored.stages
    assert stage["k6_exit_code"] == 99 and stage["status"] == "aborted"
    assert "http_req_failed rate<0.01" in stage["status_reason"]
    assert stored.status == "incomplete"
    results = {(t["metric"], t["threshold"]): (t["ok"], t["abort_on_fail"])
               for t in stage["threshold_results"]}
    assert results == {("http_req_failed", "rate<0.01"): (False, True),
                       ("http_req_duration", "p(95)<2000"): (True, False)}
    k6 = summary(stored, stage)
    # k6's own rate is its count over the time it really ran; the measured window agrees
    k6_elapsed = k6["http_reqs"]["count"] / k6["http_reqs"]["rate"]
    assert stage["measured_s"] < 6.0
    assert abs(stage["measured_s"] - k6_elapsed) < 0.5
    assert abs(stage["requests"] / stage["measured_s"] - 10.0) < 2.0
    # compare's table and the Markdown summary show every threshold and the abort
    comparison = compare_runs(stored, stored)
    shown = "http_req_failed rate<0.01: crossed — k6 aborted the stage on it (abortOnFail)"
    table = comparison_table(comparison)
    assert "k6 thresholds (baseline):\n  - s1-10rps: http_req_duration p(95)<2000: held\n" \
        f"  - s1-10rps: {shown}\n" in table
    markdown = render_markdown(comparison, {}, "abort")
    assert "## k6 thresholds\n\n- *abort* s1-10rps: http_req_duration p(95)<2000: held\n" \
        f"- *abort* s1-10rps: {shown}\n" in markdown


def test_requests_sent_elsewhere_than_the_target_are_warned_about(tmp_path: Path,
                                                                  runs_dir: Path) -> None:
    stream = io.StringIO()
    with tiny_server() as target, tiny_server() as elsewhere:
        script = write(tmp_path, "hardcoded.js", f"""
import http from 'k6/http';
import {{ sleep }} from 'k6';
export default function () {{ http.get('{elsewhere}/'); sleep(0.2); }}
""")
        run = run_stages(make_plan("1", stage_duration="1s"), label="elsewhere",
                         target=target, script=str(script), out_dir=runs_dir,
                         progress=Progress(stream, live=False))
    stored = load_run(run.path)
    (stage,) = stored.stages
    other = elsewhere.removeprefix("http://")
    assert stage["hosts"] == {other: stage["requests"]} and stage["requests"] > 0
    (warning,) = stored.manifest["warnings"]
    assert other in warning and target in warning
    assert f"warning: {warning}" in stream.getvalue()
    assert f"elsewhere: {warning}" in comparison_table(compare_runs(stored, stored))


def _k6_processes_under(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"k6") and str(path).encode() in b" ".join(cmdline):
            found.append(int(entry.name))
    return found


def test_k6_is_stopped_when_the_polling_loop_fails(tmp_path: Path, runs_dir: Path,
                                                   server: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    script = write(tmp_path, "plain.js", PLAIN_JS)
    calls = {"n": 0}
    real_poll = execute.CsvTail.poll

    def failing_poll(self: execute.CsvTail) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # k6 is running and sending load by now
            raise RuntimeError("progress display broke (simulated)")
        real_poll(self)

    monkeypatch.setattr(execute.CsvTail, "poll", failing_poll)
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            run_stages(make_plan("2", stage_duration="30s"), label="crash", target=server,
                       script=str(script), out_dir=runs_dir, progress=QUIET)
        left = _k6_processes_under(runs_dir)
        assert left == [], f"k6 still running: {left}"
    finally:
        for pid in _k6_processes_under(runs_dir):
            os.kill(pid, signal.SIGKILL)
    assert time.monotonic() - started < 20  # stopped, not waited out
    (path,) = runs_dir.iterdir()
    run = load_run(path)
    assert run.status == "failed" and run.stages[0]["status"] == "failed"


def test_cli_chooses_the_mode_and_names_the_conflict(tmp_path: Path, runs_dir: Path,
                                                     server: str) -> None:
    script = write(tmp_path, "steps.js", STAGES_JS)
    base = [sys.executable, "-m", "loadproof.cli", "run", "--target", server, "--label", "cli",
            "--script", str(script), "--out", str(runs_dir)]
    refused = subprocess.run(base + ["--stages", "5"], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2
    assert "options.stages (2 steps)" in refused.stderr and "Traceback" not in refused.stderr
    ran = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    run = load_run(ran.stdout.strip().splitlines()[-1])
    assert run.manifest["plan"]["model"] == "script"
    assert [s["key"] for s in run.stages] == ["s1-2vus", "s2-4vus"]
    assert "the script drives the load" in ran.stderr


def test_k6_errors_name_their_cause_in_the_stage_record(tmp_path: Path, runs_dir: Path,
                                                       server: str) -> None:
    script = write(tmp_path, "broken.js", "import http from 'k6/http';\n"
                   "export default function () { http.get(__ENV.LP_TARGET); }\n"
                   "export function teardown() { throw new Error('teardown broke here'); }\n")
    run = run_stages(make_plan("1", stage_duration="1s"), label="broken", target=server,
                     script=str(script), out_dir=runs_dir, progress=QUIET)
    (stage,) = run.stages
    assert stage["status"] == "failed" and stage["k6_exit_code"] != 0
    assert "teardown broke here" in stage["status_reason"]


def test_shipped_scripts_record_the_measured_window(runs_dir: Path, server: str) -> None:
    run = run_stages(make_plan("10", model="rate", stage_duration="1s", warmup="1s"),
                     label="quick", target=server, script="quick", out_dir=runs_dir,
                     progress=QUIET)
    (stage,) = load_run(run.path).stages
    assert stage["measured_s"] == 1.0 and stage["hosts"] is None  # no url tag: not recorded
    assert stage["load_started_at"] <= stage["first_request_at"] <= stage["last_request_at"]


def test_handle_summary_files_land_in_the_stage_folder(tmp_path: Path, runs_dir: Path,
                                                       server: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    script = write(tmp_path, "own_summary.js", """
import http from 'k6/http';
export default function () { http.get(__ENV.LP_TARGET); }
export function handleSummary(data) {
  return { 'my-summary.json': JSON.stringify({ reqs: data.metrics.http_reqs.values.count }) };
}
""")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = run_stages(make_plan("1", stage_duration="1s"), label="own", target=server,
                     script=str(script), out_dir=runs_dir, progress=QUIET)
    (stage,) = run.stages
    written = json.loads((run.path / "stages" / stage["dir"] / "my-summary.json").read_text())
    assert written["reqs"] > 0 and list(elsewhere.iterdir()) == []
    assert summary(run, stage)["http_reqs"]["count"] == written["reqs"]  # export still written


def _processes_with_env(marker: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_k6_that_ignores_sigint_is_killed_with_its_whole_group_at_its_time_bound(
        tmp_path: Path, runs_dir: Path, server: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a stand-in for a hung k6: answers 'version' as the real one does, then on 'run' ignores
    # SIGINT and waits on a child of its own (which a kill of the leader alone would orphan)
    real = execute.find_k6()
    fake = write(tmp_path, "k6", f"""#!/bin/sh
if [ "$1" = version ]; then exec {real} version; fi
trap '' INT
sleep 300 &
wait
""")
    fake.chmod(0o755)
    monkeypatch.setenv("K6_BINARY", str(fake))
    monkeypatch.setattr(execute, "BOUND_SLACK_S", 0.0)
    monkeypatch.setattr(execute, "STOP_GRACE_S", 1.0)
    marker = f"LP_SUMMARY_PATH={runs_dir}".encode()
    started = time.monotonic()
    try:
        run = run_stages(make_plan("1", stage_duration="1s"), label="hung", target=server,
                         script="quick", out_dir=runs_dir, progress=QUIET)
        left = _processes_with_env(marker)
        assert left == [], f"still running: {left}"
    finally:
        for pid in _processes_with_env(marker):
            os.kill(pid, signal.SIGKILL)
    assert time.monotonic() - started < 20
    (stage,) = run.stages
    assert stage["status"] == "incomplete"
    assert stage["status_reason"] == "k6 ran past its time bound and was stopped"
