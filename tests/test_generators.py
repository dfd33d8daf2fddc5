"""Stages split over several k6 generators (execution segments), merged exactly; the shard
import; Kubernetes manifests for k6-operator."""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
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
import yaml
from loadproof import shards
from loadproof.cli import main
from loadproof.errors import ExperimentError, ImportFormatError, UsageError
from loadproof.execute import run_stages
from loadproof.experiment import load_experiment
from loadproof.importer import import_shards
from loadproof.k8s import K8sSettings, ManifestError, render, stage_manifests, validate
from loadproof.metrics import read_requests, stage_metrics
from loadproof.plan import make_plan
from loadproof.progress import Progress
from loadproof.store import load_run

QUIET = Progress(quiet=True)
REFERENCE_CRD = Path(__file__).resolve().parents[2] / "shared" / "reference" / "k6-operator" \
    / "k6.io_testruns.yaml"


@contextmanager
def counting_server(delay_s: float = 0.0) -> Iterator[tuple[str, list[int]]]:
    """An HTTP server on 127.0.0.1 that counts the requests k6 sent it (its user agent: the
    runner's preflight check is not load); yields its URL and the one-element count."""
    count = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            if delay_s:
                time.sleep(delay_s)
            body = b"ok"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if "k6" in (self.headers.get("user-agent") or ""):
                with lock:
                    count[0] += 1

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", count
    finally:
        server.shutdown()
        server.server_close()


def durations_from_raw(paths: list[Path]) -> list[float]:
    """http_req_duration values of k6 raw CSVs, outside any warm-up, read with csv alone."""
    values = []
    for path in paths:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if row["metric_name"] == "http_req_duration" and row.get("scenario") != "warmup":
                    values.append(float(row["metric_value"]))
    return values


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(len(ordered) * q), 1) - 1]


def k6_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if "k6" in os.path.basename((p.cmdline() or [""])[0])]


# --------------------------------------------------------------------------------------------
# fast: segments, VUs, statuses, the experiment key, manifests


def test_segments_cover_the_test_once() -> None:
    assert [shards.segment(i, 3) for i in range(3)] == ["0:1/3", "1/3:2/3", "2/3:1"]
    assert shards.segment_sequence(4) == "0,1/4,1/2,3/4,1"
    cmd = ["k6", "run", "--out", f"csv={Path('/x/raw.csv').resolve()}", "script.js"]
    shard = shards.Shard(1, 2, Path("/x/shards/1"))
    out = shards.shard_command(cmd, shard, Path("/x/raw.csv"), Path("/x/.summary.json.tmp"))
    assert out == ["k6", "run", "--out", "csv=/x/shards/1/raw.csv", "--execution-segment",
                   "1/2:1", "--execution-segment-sequence", "0,1/2,1", "script.js"]


def test_arrival_rate_vus_divide_by_the_generators() -> None:
    for level in (7, 30, 101, 5000):
        for generators in (1, 2, 3, 7):
            main_ = make_plan(str(level), model="rate").stages[0].k6_scenarios(generators)["main"]
            assert main_["preAllocatedVUs"] % generators == 0
            assert main_["maxVUs"] % generators == 0
            assert main_["maxVUs"] >= level and main_["preAllocatedVUs"] >= 20


def test_worst_shard_decides_and_a_failed_shard_keeps_the_others() -> None:
    assert shards.worst_code([0, 99]) == 99
    assert shards.worst_code([0, 107, 105]) == 107
    assert shards.worst_code([105, 0]) == 105
    record = {"status": "failed", "requests": 40, "shards": [
        {"shard": 0, "segment": "0:1/2", "status": "complete", "k6_exit_code": 0,
         "k6_exit_meaning": "ok"},
        {"shard": 1, "segment": "1/2:1", "status": "failed", "k6_exit_code": -9,
         "k6_exit_meaning": "unknown k6 exit code"}]}
    shards.settle_status(record)
    assert record["status"] == "incomplete"
    assert "generator 1 (1/2:1)" in record["status_reason"]
    nothing = {**record, "status": "failed", "requests": 0}
    shards.settle_status(nothing)
    assert nothing["status"] == "failed"


def test_generators_flag_and_experiment_key_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--generators 0"):
        shards.check_generators(0)
    with pytest.raises(UsageError, match="--generators"):
        run_stages(make_plan("5", model="rate"), label="x", target="http://127.0.0.1:9",
                   script="quick", out_dir=tmp_path, progress=QUIET, generators=0)
    assert not any(tmp_path.iterdir())  # refused before any run folder
    base = ("title: t\narms:\n  a: {target: 'http://127.0.0.1:1'}\n"
            "  b: {target: 'http://127.0.0.1:2'}\nstages: [5]\n")
    good = tmp_path / "good.yaml"
    good.write_text(base + "generators: 3\n")
    assert load_experiment(good).generators == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "generators: two\n")
    with pytest.raises(ExperimentError, match="generators"):
        load_experiment(bad)


def _settings(**kw: object) -> K8sSettings:
    values: dict[str, object] = {"target": "http://svc.default:8000",
                                 "plan": make_plan("100,300", model="rate",
                                                   stage_duration="30s"),
                                 "generators": 4}
    values.update(kw)
    return K8sSettings(**values)  # type: ignore[arg-type]


def test_k8s_render_writes_valid_testruns(tmp_path: Path) -> None:
    written = render(_settings(), tmp_path)
    assert [p.name for p in written] == ["s1-100rps.yaml", "s2-300rps.yaml", "pvc.yaml",
                                         "collect-pod.yaml"]
    config_map, test_run = yaml.safe_load_all((tmp_path / "s2-300rps.yaml").read_text())
    assert config_map["kind"] == "ConfigMap"
    assert set(config_map["data"]) == {"quick.js", "loadproof.js"}
    assert "./loadproof.js" in config_map["data"]["quick.js"]  # the library, flattened
    assert test_run["apiVersion"] == "k6.io/v1alpha1" and test_run["kind"] == "TestRun"
    spec = test_run["spec"]
    assert spec["parallelism"] == 4
    assert spec["script"]["configMap"] == {"name": "loadproof-s2-300rps", "file": "quick.js"}
    assert "--out csv=/results/raw.csv" in spec["arguments"]
    env = {e["name"]: e.get("value") for e in spec["runner"]["env"]}
    assert env["LP_LEVEL"] == "300" and env["LP_MODEL"] == "rate"
    assert env["LP_GENERATORS"] == "4" and env["LP_STAGE"] == "s2-300rps"
    mount = spec["runner"]["volumeMounts"][0]
    assert mount["subPathExpr"] == "loadproof-s2-300rps/$(POD_NAME)"
    assert spec["runner"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == \
        "loadproof-results"
    validate(test_run)  # the shipped CRD schema


def test_k8s_manifests_the_schema_refuses_are_not_written(tmp_path: Path) -> None:
    _, test_run = stage_manifests(_settings(), _settings().plan.stages[0])
    test_run["spec"]["parallelism"] = "four"
    with pytest.raises(ManifestError, match="parallelism"):
        validate(test_run)
    del test_run["spec"]["script"]
    test_run["spec"]["parallelism"] = 2
    with pytest.raises(ManifestError, match="script"):
        validate(test_run)
    with pytest.raises(UsageError, match="--pvc"):
        render(_settings(pvc="Bad_Name"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_k8s_render_wraps_a_user_script(tmp_path: Path) -> None:
    script = tmp_path / "mine.js"
    script.write_text("import http from 'k6/http';\nexport default function () "
                      "{ http.get(__ENV.LP_TARGET); }\n")
    render(_settings(script=str(script), generators=2), tmp_path / "out")
    config_map, test_run = yaml.safe_load_all((tmp_path / "out" / "s1-100rps.yaml").read_text())
    assert set(config_map["data"]) == {"mine.js", "loadproof-wrapper.js"}
    wrapper = config_map["data"]["loadproof-wrapper.js"]
    assert 'from "./mine.js"' in wrapper
    assert '"preAllocatedVUs": 26' in wrapper  # 25 rounded up to a multiple of 2
    assert test_run["spec"]["script"]["configMap"]["file"] == "loadproof-wrapper.js"
    assert "--summary-export /results/summary.json" in test_run["spec"]["arguments"]


def test_cli_k8s_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["k8s", "render", "--target", "http://svc:8000", "--stages", "50",
                 "--generators", "3", "--out", str(tmp_path), "--name", "shop"])
    assert code == 0
    out, err = capsys.readouterr()
    assert str(tmp_path / "s1-50rps.yaml") in out
    assert "import --shards" in err and "kubectl apply" in err
    assert main(["k8s", "render", "--target", "http://svc:8000", "--stages", "50",
                 "--generators", "0", "--out", str(tmp_path / "x")]) == 2


@pytest.mark.skipif(not REFERENCE_CRD.is_file(), reason="the reference CRD is not here")
def test_shipped_schema_is_the_operators() -> None:
    crd = yaml.safe_load(REFERENCE_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    shipped = json.loads((Path(shards.__file__).parent / "schemas"
                          / "k6-operator-testrun.schema.json").read_text())
    shipped.pop("$comment")
    assert shipped == version["schema"]["openAPIV3Schema"]


# --------------------------------------------------------------------------------------------
# slow: real k6 processes against a real server on loopback


@pytest.mark.slow
def test_two_generators_store_every_request_and_merge_exactly(runs_dir: Path) -> None:
    with counting_server() as (url, served):
        run = run_stages(make_plan("60", model="rate", stage_duration="2s"), label="split",
                         target=url, script="quick", out_dir=runs_dir, progress=QUIET,
                         generators=2, keep_raw=True)
        answered = served[0]
    assert run.status == "complete"
    assert run.manifest["generators"] == 2
    record = run.stages[0]
    assert [s["segment"] for s in record["shards"]] == ["0:1/2", "1/2:1"]
    assert all(s["k6_exit_code"] == 0 and s["status"] == "complete" for s in record["shards"])
    assert all(s["requests"] > 0 and s["first_request_at"] and s["ended_at"]
               for s in record["shards"])
    frame = read_requests(run)
    assert record["requests"] == frame.height == answered  # every request the server saw
    assert sum(s["requests"] for s in record["shards"]) == answered
    stored = json.loads(json.dumps(record))  # what the manifest keeps
    shard_column = sorted(set(
        __import__("polars").read_parquet(run.path / stored["requests_file"])["shard"]))
    assert shard_column == [0, 1]
    raws = [run.path / p for p in record["raw_files"]]
    durations = durations_from_raw(raws)
    assert len(durations) == answered
    metrics = stage_metrics(run)[0]
    assert metrics.latency_all.p95_ms == pytest.approx(nearest_rank(durations, 0.95), abs=1e-9)
    assert metrics.latency_all.p99_ms == pytest.approx(nearest_rank(durations, 0.99), abs=1e-9)
    # both k6 processes' CPU is counted; none is left running
    assert record["conditions"]["k6_cpu_cores"] is not None
    assert not k6_children()


@pytest.mark.slow
def test_a_generator_that_dies_leaves_the_stage_incomplete_with_the_others_data(
        runs_dir: Path) -> None:
    killed: list[int] = []

    def kill_second() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not killed:
            for proc in k6_children():
                try:
                    if "1/2:1" in proc.cmdline() and proc.create_time() < time.time() - 1.5:
                        proc.kill()
                        killed.append(proc.pid)
                except psutil.Error:
                    continue
            time.sleep(0.1)

    with counting_server() as (url, _served):
        killer = threading.Thread(target=kill_second)
        killer.start()
        run = run_stages(make_plan("40", model="rate", stage_duration="4s"), label="dies",
                         target=url, script="quick", out_dir=runs_dir, progress=QUIET,
                         generators=2)
        killer.join()
    assert killed
    record = run.stages[0]
    first, second = record["shards"]
    assert first["status"] == "complete" and first["requests"] > 0
    assert second["status"] == "failed" and second["k6_exit_code"] == -9
    assert record["status"] == "incomplete"
    assert "1 of 2 generators did not complete" in record["status_reason"]
    assert record["requests"] == first["requests"] + second["requests"]
    assert stage_metrics(run)[0].requests == record["requests"]  # usable, not dropped
    assert not k6_children()


@pytest.mark.slow
def test_ctrl_c_stops_every_generator(runs_dir: Path) -> None:
    with counting_server() as (url, _served):
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadproof.cli", "run", "--target", url, "--label", "stop",
             "--stages", "20", "--model", "rate", "--stage-duration", "30s",
             "--script", "quick", "--out", str(runs_dir), "--generators", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        seen: list[psutil.Process] = []
        while time.monotonic() < deadline and len(seen) < 3:
            seen = [p for p in parent.children() if "k6" in p.name()]
            time.sleep(0.2)
        assert len(seen) == 3
        time.sleep(1.5)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    gone, alive = psutil.wait_procs(seen, timeout=5)
    assert not alive
    run = load_run(next(runs_dir.iterdir()))
    record = run.stages[0]
    assert record["status"] == "incomplete"
    assert len(record["shards"]) == 3 and record["requests"] > 0


@pytest.mark.slow
def test_import_shards_merges_raw_files_and_warns_on_disjoint_windows(
        runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with counting_server() as (url, served):
        run = run_stages(make_plan("40", model="rate", stage_duration="2s"), label="src",
                         target=url, script="quick", out_dir=runs_dir, progress=QUIET,
                         generators=2, keep_raw=True)
        answered = served[0]
    raws = [run.path / p for p in run.stages[0]["raw_files"]]
    zipped = tmp_path / "raw.csv.gz"  # one gzipped, one plain; same base name
    zipped.write_bytes(gzip.compress(raws[1].read_bytes()))
    out = tmp_path / "imported"
    code = main(["import", "--shards", str(raws[0]), str(zipped), "--label", "merged",
                 "--out", str(out)])
    assert code == 0
    merged = load_run(next(out.iterdir()))
    record = merged.stages[0]
    assert record["key"] == "s1-40rps" and record["requests"] == answered
    assert [s["shard"] for s in record["shards"]] == [0, 1]
    assert record["shards"][1]["file"] == str(zipped.resolve())
    assert record["shards"][0]["sha256"] and record["shards_overlap_s"] > 0
    assert not merged.manifest["warnings"]
    p95 = stage_metrics(merged)[0].latency_all.p95_ms
    assert p95 == pytest.approx(nearest_rank(durations_from_raw(raws), 0.95), abs=1e-9)
    assert p95 == stage_metrics(run)[0].latency_all.p95_ms
    # the second generator's clock an hour ahead: the windows no longer overlap
    shifted = tmp_path / "shifted.csv"
    with open(raws[1], newline="") as src, open(shifted, "w", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        header = next(reader)
        writer.writerow(header)
        at = header.index("timestamp")
        for row in reader:
            row[at] = str(int(row[at]) + 3_600_000_000)
            writer.writerow(row)
    capsys.readouterr()
    assert main(["import", "--shards", str(raws[0]), str(shifted), "--label", "skew",
                 "--out", str(out)]) == 0
    assert "do not overlap" in capsys.readouterr().err
    with pytest.raises(UsageError, match="at least two"):
        import_shards([raws[0]], label="one", out_dir=out)
    with pytest.raises(ImportFormatError, match="raw outputs"):
        import_shards([raws[0], run.path / run.stages[0]["shards"][0]["summary_file"]],
                      label="bad", out_dir=out)


@pytest.mark.slow
def test_shipped_library_splits_vus_by_the_generators(tmp_path: Path) -> None:
    from loadproof.k6bin import find_k6
    from loadproof.scripts import resolve_script

    env = {**os.environ, "LP_TARGET": "http://127.0.0.1:1", "LP_MODEL": "rate",
           "LP_LEVEL": "101", "LP_DURATION": "5s", "LP_GENERATORS": "3"}
    out = subprocess.run([str(find_k6()), "inspect", "--include-system-env-vars",
                          str(resolve_script("quick"))], capture_output=True, text=True,
                         env=env, timeout=60, check=True)
    main_ = json.loads(out.stdout)["scenarios"]["main"]
    assert main_["preAllocatedVUs"] == 27 and main_["maxVUs"] == 102
