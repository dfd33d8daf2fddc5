"""Real k6 outputs, as users write them, imported and run: scripts in the style of k6's
examples against a loopback server of the tests' own (redirects, 200, 404, 429, 500), with
--out csv, --out json and --summary-export, checked against what k6 itself reports for the
same run (counts exactly; rates within the time source's resolution)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from loadproof.cli import main
from loadproof.compare import compare_runs
from loadproof.errors import ImportFormatError
from loadproof.importer import import_files
from loadproof.k6bin import find_k6
from loadproof.metrics import StageMetrics, stage_metrics
from loadproof.store import Run, load_run
from loadproof.summary import dashboard_rows, stage_frame, stage_line, talking_points

pytestmark = pytest.mark.slow


class _Handler(BaseHTTPRequestHandler):
    """/redirect/N answers 302 down to /get; /status/N answers N; anything else 200."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        if parts[0] == "redirect" and len(parts) == 2:
            hops = int(parts[1])
            self.send_response(302)
            self.send_header("location", f"/redirect/{hops - 1}" if hops > 1 else "/get")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        status = int(parts[1]) if parts[0] == "status" and len(parts) == 2 else 200
        body = b'{"ok": true}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class K6Outputs:
    csv: Path
    json: Path
    summary: Path
    started: float  # wall clock around the k6 process, unix seconds
    ended: float
    code: int

    def metric(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.summary.read_text())["metrics"][name]
        return data

    @property
    def http_reqs(self) -> int:
        return int(self.metric("http_reqs")["count"])

    @property
    def k6_failed(self) -> int:
        """Requests k6 counted as failed (not expected_response): http_req_failed's passes."""
        return int(self.metric("http_req_failed")["passes"])

    @property
    def k6_duration_s(self) -> float:
        """k6's own test duration: it divides http_reqs by it for the rate."""
        reqs = self.metric("http_reqs")
        return float(reqs["count"]) / float(reqs["rate"])


def k6_run(folder: Path, name: str, script: str, base_url: str, *,
           env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> K6Outputs:
    """Plain ``k6 run`` of ``script`` with raw CSV, raw JSON and --summary-export outputs."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.js"
    path.write_text(script)
    out = K6Outputs(folder / f"{name}.csv", folder / f"{name}.json", folder / f"{name}.sum.json",
                    0.0, 0.0, -1)
    cmd = [str(find_k6()), "run", "--quiet", "--no-color", "--out", f"csv={out.csv}",
           "--out", f"json={out.json}", "--summary-export", str(out.summary), *args, str(path)]
    full_env = {**os.environ, "BASE": base_url, "K6_NO_USAGE_REPORT": "true", **(env or {})}
    out.started = time.time()
    proc = subprocess.run(cmd, env=full_env, cwd=folder, capture_output=True, text=True,
                          timeout=60, check=False)
    out.ended = time.time()
    out.code = proc.returncode
    assert proc.returncode in (0, 99), proc.stdout + proc.stderr
    return out


# Each iteration: a redirect chain (2 hops of 302, then 200), a 429, a 500 and a 404.
MIXED = """
import http from 'k6/http';
import { sleep } from 'k6';
export const options = { vus: 2, duration: '1500ms' };
export default function () {
  http.get(`${__ENV.BASE}/redirect/2`);
  http.get(`${__ENV.BASE}/status/429`);
  http.get(`${__ENV.BASE}/status/500`);
  http.get(`${__ENV.BASE}/status/404`);
  sleep(0.02);
}
"""


@pytest.fixture(scope="module")
def mixed(base_url: str, tmp_path_factory: pytest.TempPathFactory) -> K6Outputs:
    return k6_run(tmp_path_factory.mktemp("mixed"), "mixed", MIXED, base_url)


def one_stage(run: Run) -> StageMetrics:
    (stage,) = stage_metrics(load_run(run.path))
    return stage


FEW = """
import http from 'k6/http';
export const options = { vus: 1, iterations: 12 };
export default function () { http.get(`${__ENV.BASE}/get`); }
"""


# -- 1. success follows k6 ---------------------------------------------------------------


@pytest.mark.parametrize("files", [("csv",), ("json",), ("csv", "summary"), ("json", "summary")])
def test_success_follows_k6_expected_response(mixed: K6Outputs, runs_dir: Path,
                                              files: tuple[str, ...]) -> None:
    run = import_files([getattr(mixed, f) for f in files], label="mixed", out_dir=runs_dir)
    stage = one_stage(run)
    iterations = int(mixed.metric("iterations")["count"])
    assert stage.requests == mixed.http_reqs == 6 * iterations
    # 302, 302, 200 succeed (k6's default responseCallback: 2xx-3xx expected); 429 is its own
    # class; 500 and 404 are errors
    assert stage.success_source == "expected_response"
    assert stage.successes == mixed.http_reqs - mixed.k6_failed == 3 * iterations
    assert stage.rate_limited == iterations
    assert stage.errors == 2 * iterations
    assert stage.goodput_rps == pytest.approx(stage.successes / stage.duration_s)


def test_csv_json_and_summary_agree_on_success(mixed: K6Outputs, runs_dir: Path) -> None:
    shares = {kind: one_stage(import_files([path], label=kind, out_dir=runs_dir)).success_rate
              for kind, path in (("csv", mixed.csv), ("json", mixed.json),
                                 ("summary", mixed.summary))}
    assert shares["csv"] == shares["json"] == shares["summary"] == pytest.approx(0.5)


CALLBACK = """
import http from 'k6/http';
// 404 is an expected answer for this test, and 429 is load shedding (as loadproof's own
// scripts mark it): k6 counts neither as failed
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 399 }, 404, 429));
export const options = { vus: 2, duration: '1s' };
export default function () {
  http.get(`${__ENV.BASE}/status/404`);
  http.get(`${__ENV.BASE}/status/429`);
  http.get(`${__ENV.BASE}/status/500`);
  http.get(`${__ENV.BASE}/get`);
}
"""


def test_success_follows_the_scripts_response_callback_but_429_stays_apart(
        base_url: str, tmp_path: Path, runs_dir: Path) -> None:
    out = k6_run(tmp_path, "callback", CALLBACK, base_url)
    iterations = int(out.metric("iterations")["count"])
    assert out.k6_failed == iterations  # only the 500s
    for raw in (out.csv, out.json):
        stage = one_stage(import_files([raw], label="cb", out_dir=runs_dir))
        assert stage.requests == out.http_reqs == 4 * iterations
        assert stage.successes == 2 * iterations  # 404 (expected by the callback) and 200
        assert stage.rate_limited == iterations  # expected by k6, still not a success here
        assert stage.errors == iterations


# -- 4. systemTags ------------------------------------------------------------------------


TAGS_SCRIPT = """
import http from 'k6/http';
export const options = { vus: 2, duration: '1s', systemTags: ['status', 'method'] };
export default function () {
  http.get(`${__ENV.BASE}/redirect/1`);
  http.get(`${__ENV.BASE}/get`);
  http.get(`${__ENV.BASE}/status/429`);
  http.get(`${__ENV.BASE}/status/500`);
}
"""


def test_system_tags_without_scenario_or_expected_response(base_url: str, tmp_path: Path,
                                                           runs_dir: Path) -> None:
    out = k6_run(tmp_path, "tags", TAGS_SCRIPT, base_url)
    assert "scenario" not in out.csv.read_text().splitlines()[0]
    iterations = int(out.metric("iterations")["count"])
    for raw in (out.csv, out.json):
        stage = one_stage(import_files([raw], label="tags", out_dir=runs_dir))
        assert stage.requests == out.http_reqs == 5 * iterations
        assert stage.success_source == "status 2xx-3xx"
        assert stage.successes == out.http_reqs - out.k6_failed == 3 * iterations
        assert stage.rate_limited == iterations and stage.errors == iterations


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_system_tags_without_status_are_refused_by_name(base_url: str, tmp_path: Path,
                                                        runs_dir: Path, kind: str,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    out = k6_run(tmp_path, "nostatus", FEW, base_url, args=("--system-tags", "method,name"))
    raw = getattr(out, kind)
    with pytest.raises(ImportFormatError, match="'status'.*systemTags"):
        import_files([raw], label="x", out_dir=runs_dir)
    assert list(runs_dir.iterdir()) == []  # nothing half-written
    assert main(["import", str(raw), "--label", "x", "--out", str(runs_dir)]) == 5
    err = capsys.readouterr().err
    assert str(raw) in err and "add 'status' to systemTags" in err and "Traceback" not in err


USER_SCRIPT_TAGS = """
import http from 'k6/http';
export const options = { systemTags: ['status', 'method'] };
export default function () {
  http.get(`${__ENV.LP_TARGET}/get`);
}
"""


def test_run_with_a_script_that_sets_system_tags(base_url: str, tmp_path: Path,
                                                  runs_dir: Path) -> None:
    script = tmp_path / "tags.js"
    script.write_text(USER_SCRIPT_TAGS)
    code = main(["run", "--target", base_url, "--label", "tags", "--stages", "2",
                 "--stage-duration", "1s", "--script", str(script), "--out", str(runs_dir)])
    assert code == 0
    (run_path,) = runs_dir.iterdir()
    run = load_run(run_path)
    (record,) = run.stages
    summary = json.loads((run.path / record["summary_file"]).read_text())
    stage = one_stage(run)
    assert stage.requests == record["requests"] == summary["metrics"]["http_reqs"]["count"]
    assert stage.success_source == "status 2xx-3xx" and stage.successes == stage.requests
    assert stage.duration_source == "planned"  # a complete stage: its window agrees


def test_run_refuses_a_script_whose_system_tags_leave_out_status(
        base_url: str, tmp_path: Path, runs_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "nostatus.js"
    script.write_text(USER_SCRIPT_TAGS.replace("['status', 'method']", "['method']"))
    code = main(["run", "--target", base_url, "--label", "nostatus", "--stages", "1",
                 "--stage-duration", "1s", "--script", str(script), "--out", str(runs_dir)])
    err = capsys.readouterr().err
    assert code == 5 and "add 'status' to systemTags" in err and "Traceback" not in err
    (run_path,) = runs_dir.iterdir()
    run = load_run(run_path)
    assert run.status == "failed" and run.stages[0]["status"] == "failed"


# -- 5. time resolution and formats -------------------------------------------------------


STEADY = """
import http from 'k6/http';
import { sleep } from 'k6';
export const options = { vus: 2, duration: '1s' };
export default function () {
  http.get(`${__ENV.BASE}/get`);
  sleep(0.02);
}
"""


@pytest.mark.parametrize(("time_format", "source", "resolution_s"), [
    ("unix", "timestamps (1 s)", 1.0), ("unix_milli", "timestamps (1 ms)", 1e-3),
    ("unix_micro", "timestamps (1 µs)", 1e-6), ("unix_nano", "timestamps (1 µs)", 1e-6),
    ("rfc3339", "timestamps (1 s)", 1.0)])
def test_every_csv_time_format_and_its_resolution(base_url: str, tmp_path: Path, runs_dir: Path,
                                                  time_format: str, source: str,
                                                  resolution_s: float) -> None:
    out = k6_run(tmp_path, "steady", STEADY, base_url,
                 env={"K6_CSV_TIME_FORMAT": time_format, "TZ": "Asia/Kolkata"})
    run = import_files([out.csv], label=time_format, out_dir=runs_dir)
    stage = one_stage(run)
    assert stage.requests == out.http_reqs
    assert stage.duration_source == source
    # the load window from the file against k6's own test duration: within the format's
    # resolution (plus the few ms k6 spends around its iterations)
    assert abs(stage.duration_s - out.k6_duration_s) <= resolution_s + 0.02
    frame = __import__("polars").read_parquet(run.path / run.stages[0]["requests_file"])
    first, last = (t.timestamp() for t in (frame["timestamp"].min(), frame["timestamp"].max()))
    assert out.started - 1 <= first <= last <= out.ended + 1  # the offset was read right
    # with k6's summary of the same requests, k6's own duration and so its rate
    with_summary = one_stage(import_files([out.csv, out.summary], label="s", out_dir=runs_dir))
    assert with_summary.duration_source == "k6 summary"
    assert with_summary.throughput_rps == pytest.approx(out.metric("http_reqs")["rate"],
                                                        rel=1e-9)


def test_json_timestamps_give_k6s_rate(mixed: K6Outputs, runs_dir: Path) -> None:
    stage = one_stage(import_files([mixed.json], label="j", out_dir=runs_dir))
    assert stage.duration_source == "timestamps (1 µs)"
    assert stage.duration_s == pytest.approx(mixed.k6_duration_s, abs=0.02)
    assert stage.throughput_rps == pytest.approx(mixed.metric("http_reqs")["rate"], rel=0.02)


# -- issue 9: measured durations ----------------------------------------------------------


ABORTS = """
import http from 'k6/http';
import { sleep } from 'k6';
export const options = {
  thresholds: { http_req_failed: [{ threshold: 'rate<0.01', abortOnFail: true }] },
};
export default function () {
  http.get(`${__ENV.LP_TARGET}/status/500`);
  sleep(0.01);
}
"""


def test_an_aborted_stage_is_divided_by_its_measured_window(base_url: str, tmp_path: Path,
                                                           runs_dir: Path) -> None:
    script = tmp_path / "aborts.js"
    script.write_text(ABORTS)
    main(["run", "--target", base_url, "--label", "aborts", "--stages", "2",
          "--stage-duration", "8s", "--script", str(script), "--out", str(runs_dir)])
    (run_path,) = runs_dir.iterdir()
    run = load_run(run_path)
    (record,) = run.stages
    assert record["k6_exit_code"] == 99  # k6 aborted the test on its threshold
    reqs = json.loads((run.path / record["summary_file"]).read_text())["metrics"]["http_reqs"]
    stage = one_stage(run)
    assert stage.requests == reqs["count"]
    # the window the run recorded (measured_s: from k6's test start to the last request, so
    # without the moments k6 takes to abort), else k6's own test duration: either way not
    # the planned 8 s, and close to k6's rate
    assert stage.duration_source.startswith("measured (")
    assert stage.duration_s < 6
    assert stage.throughput_rps == pytest.approx(reqs["rate"], rel=0.05)
    # without a recorded window, k6's summary gives k6's own duration, so exactly its rate
    for key in ("measured_s", "measured_from"):
        record.pop(key, None)
    run.save()
    stage = one_stage(run)
    assert stage.duration_source == "measured (k6 summary)"
    assert stage.throughput_rps == pytest.approx(reqs["rate"], rel=1e-6)


# -- 7. imported runs read rightly ----------------------------------------------------------


SCENARIOS = """
import http from 'k6/http';
import { sleep } from 'k6';
export const options = {
  scenarios: {
    warmup: { executor: 'constant-vus', vus: 1, duration: '1s' },
    main: { executor: 'constant-vus', vus: 2, duration: '1s', startTime: '1s' },
  },
  thresholds: { 'http_reqs{scenario:warmup}': [], 'http_reqs{scenario:main}': [] },
};
export default function () {
  http.get(`${__ENV.BASE}/get`);
  sleep(0.02);
}
"""


# the same, each scenario tagged with a stage of its own (as a script-driven run tags them)
TAGGED_SCENARIOS = SCENARIOS.replace("duration: '1s' }", "duration: '1s', tags: { stage: "
                                     "'s1-warmup' } }").replace(
    "startTime: '1s' }", "startTime: '1s', tags: { stage: 's2-main' } }")


@pytest.mark.parametrize(("script", "keys"), [(SCENARIOS, {"warmup": "warmup", "main": "main"}),
                                              (TAGGED_SCENARIOS, {"warmup": "s1-warmup",
                                                                  "main": "s2-main"})])
def test_a_users_scenario_named_warmup_is_a_stage_not_dropped(
        base_url: str, tmp_path: Path, runs_dir: Path, script: str,
        keys: dict[str, str]) -> None:
    out = k6_run(tmp_path, "scenarios", script, base_url)
    for raw in (out.csv, out.json):
        stages = {m.key: m for m in stage_metrics(import_files([raw], label="sc",
                                                               out_dir=runs_dir))}
        assert set(stages) == set(keys.values())
        for scenario, key in keys.items():
            assert stages[key].requests == \
                out.metric(f"http_reqs{{scenario:{scenario}}}")["count"]
        assert sum(m.requests for m in stages.values()) == out.http_reqs


def test_imported_runs_read_rightly(mixed: K6Outputs, base_url: str, tmp_path: Path,
                                    runs_dir: Path) -> None:
    base = import_files([mixed.csv], label="before", out_dir=runs_dir)
    cand = import_files([mixed.json], label="after", out_dir=runs_dir)
    comparison = compare_runs(load_run(base.path), load_run(cand.path))
    points = talking_points(comparison)
    assert points and not any("None" in p for p in points)
    assert any("At stage imported" in p for p in points)
    capacity = dashboard_rows(comparison)[-1]
    assert capacity["Before"] == capacity["After"] == "no load level (imported stages)"
    assert "no load level" in (comparison.capacity.reason or "")
    # fewer successes than a latency figure needs: no p95 printed anywhere
    few = k6_run(tmp_path, "few", FEW, base_url)
    small = [import_files([few.csv], label=label, out_dir=runs_dir) for label in ("a", "b")]
    small_cmp = compare_runs(load_run(small[0].path), load_run(small[1].path))
    (metrics,) = small_cmp.baseline_metrics
    assert metrics.requests == few.http_reqs == 12
    assert "no p95 (12 successful requests, fewer than 30)" in stage_line(metrics)
    assert set(stage_frame(small_cmp)["p95"]) == {"—"}
    assert small_cmp.stage("imported").metrics["latency_p95_ms"].ratio is None


def test_comparing_an_import_with_a_run_is_refused(mixed: K6Outputs, base_url: str,
                                                   tmp_path: Path, runs_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    imported = import_files([mixed.csv], label="imported", out_dir=runs_dir)
    script = tmp_path / "get.js"
    script.write_text(USER_SCRIPT_TAGS)
    assert main(["run", "--target", base_url, "--label", "ran", "--stages", "1",
                 "--stage-duration", "1s", "--script", str(script), "--out",
                 str(runs_dir)]) == 0
    ran = next(p for p in runs_dir.iterdir() if "-ran-" in p.name)
    capsys.readouterr()
    assert main(["compare", str(imported.path), str(ran), "--runs-dir", str(runs_dir)]) == 6
    err = capsys.readouterr().err
    assert "cannot be compared" in err and "s1-1vus" in err and "imported" in err


HANDLE_SUMMARY = """
import http from 'k6/http';
export default function () { http.get(`${__ENV.LP_TARGET}/get`); }
export function handleSummary(data) {
  return { 'my-summary.json': JSON.stringify(data) };
}
"""


def test_report_out_and_handle_summary_files_stay_out_of_the_current_folder(
        mixed: K6Outputs, base_url: str, tmp_path: Path, runs_dir: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    script = tmp_path / "hs.js"
    script.write_text(HANDLE_SUMMARY)
    loadproof = [str(Path(find_k6()).parent / "loadproof")]
    ran = subprocess.run(loadproof + ["run", "--target", base_url, "--label", "hs", "--stages",
                                      "1", "--stage-duration", "1s", "--script", str(script),
                                      "--out", str(runs_dir)],
                         cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stderr
    run_path = Path(ran.stdout.strip().splitlines()[-1])
    assert (run_path / "stages" / "r1-s1-1vus" / "my-summary.json").is_file()
    base = import_files([mixed.csv], label="before", out_dir=runs_dir)
    cand = import_files([mixed.json], label="after", out_dir=runs_dir)
    out = tmp_path / "report"
    done = subprocess.run(loadproof + ["report", str(base.path), str(cand.path), "--out",
                                       str(out), "--formats", "md"],
                          cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert (out / "report.md").is_file() and (out / "feed.json").is_file()
    assert sorted(p.name for p in cwd.iterdir()) == []  # nothing written where we stood
