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

from bench.generators import counting_server

QUIET = Progress(quiet=True)
REFERENCE_CRD = Path(__file__).resolve().parents[2] / "shared" / "reference" / "k6-operator" \
    / "k6.io_testruns.yaml"


def open_raw(path: Path):  # type: ignore[no-untyped-def]
    """A raw CSV kept by the runner (gzipped by default, runner/rawpipe.py) or a plain one."""
    return (gzip.open(path, "rt", newline="") if path.name.endswith(".gz")
            else open(path, newline=""))  # noqa: SIM115


def durations_from_raw(paths: list[Path]) -> list[float]:
    """http_req_duration values of k6 raw CSVs, outside any warm-up, read with csv alone."""
    values = []
    for path in paths:
        with open_raw(path) as handle:
            for row in csv.DictReader(handle):
                if row["metric_name"] == "http_req_duration" and row.get("scenario") != "warmup":
                    values.append(float(row["metric_value"]))
    return values


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(len(ordered) * q), 1) - 1]


def k6_children() -> list[psutil.Process]:
    """The live k6 processes under this test (a just-killed one may be a zombie: not live)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "k6" in os.path.basename((proc.cmdline() or [""])[0]):
                found.append(proc)
        except psutil.Error:  # exited, or a zombie until its parent reaps it
            continue
    return found


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


def test_pipeline_sessions_take_the_experiments_generators(tmp_path: Path) -> None:
    from loadproof.pipeline import _searches, _sessions

    experiment = tmp_path / "e.yaml"
    experiment.write_text("title: t\narms:\n  a: {target: 'http://127.0.0.1:1'}\n"
                          "  b: {target: 'http://127.0.0.1:2'}\nstages: [5]\ngenerators: 2\n"
                          "capacity: {min_rate: 10, max_rate: 20}\n")
    loaded = load_experiment(experiment)
    sessions = _sessions(loaded, loaded.plan, "quick", "", tmp_path, QUIET)
    assert [s.generators for s in sessions] == [2, 2]  # type: ignore[attr-defined]
    searches = _searches(loaded, tmp_path, QUIET)
    assert [s.session.generators for s in searches] == [2, 2]  # type: ignore[attr-defined]


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


def test_shipped_schema_is_a_valid_json_schema() -> None:
    import jsonschema
    from loadproof.k8s import testrun_schema

    jsonschema.Draft7Validator.check_schema(testrun_schema())
    assert "e2c9571a" in testrun_schema()["$comment"]  # its source is named


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
        run = run_stages(make_plan("30,50", model="rate", stage_duration="2s"), label="src",
                         target=url, script="quick", out_dir=runs_dir, progress=QUIET,
                         generators=2, keep_raw=True)
        answered = served[0]
    raws = [[run.path / p for p in stage["raw_files"]] for stage in run.stages]
    zipped = tmp_path / "raw.csv.gz"  # gzipped, and of the same base name as the others
    zipped.write_bytes(raws[1][1].read_bytes())  # the runner keeps them gzipped
    assert zipped.read_bytes()[:2] == b"\x1f\x8b"
    out = tmp_path / "imported"
    files = [raws[0][0], raws[0][1], raws[1][0], zipped]
    assert main(["import", "--shards", *map(str, files), "--label", "merged",
                 "--out", str(out)]) == 0
    merged = load_run(next(out.iterdir()))
    assert [s["key"] for s in merged.stages] == ["s1-30rps", "s2-50rps"]
    assert sum(s["requests"] for s in merged.stages) == answered
    for record, original in zip(merged.stages, run.stages, strict=True):
        assert record["requests"] == original["requests"]
        assert [s["shard"] for s in record["shards"]] == [0, 1]
        assert record["shards"][0]["sha256"] and record["shards_overlap_s"] > 0
    assert merged.stages[1]["shards"][1]["file"] == str(zipped.resolve())
    assert not merged.manifest["warnings"]
    frame = read_requests(merged)
    assert frame.height == answered
    for got, want, files_of in zip(stage_metrics(merged), stage_metrics(run), raws,
                                   strict=True):
        assert got.latency_all.p95_ms == want.latency_all.p95_ms
        assert got.latency_all.p95_ms == pytest.approx(
            nearest_rank(durations_from_raw(files_of), 0.95), abs=1e-9)
    # the second generator's clock an hour ahead: the windows no longer overlap
    shifted = tmp_path / "shifted.csv"
    with open_raw(raws[0][1]) as src, open(shifted, "w", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        header = next(reader)
        writer.writerow(header)
        at = header.index("timestamp")
        for row in reader:
            row[at] = str(int(row[at]) + 3_600_000_000)
            writer.writerow(row)
    capsys.readouterr()
    assert main(["import", "--shards", str(raws[0][0]), str(shifted), "--label", "skew",
                 "--out", str(out)]) == 0
    assert "do not overlap" in capsys.readouterr().err
    with pytest.raises(UsageError, match="at least two"):
        import_shards([raws[0][0]], label="one", out_dir=out)
    with pytest.raises(ImportFormatError, match="raw outputs"):
        import_shards([raws[0][0], run.path / run.stages[0]["shards"][0]["summary_file"]],
                      label="bad", out_dir=out)
    assert main(["import", "--shards", str(raws[0][0]), str(raws[0][1]), "--stages", "30",
                 "--label", "x", "--out", str(out)]) == 2


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


def test_cpu_of_every_generator_process_is_counted_as_k6() -> None:
    """The stage's conditions count k6 as the runner's reaped children, and the sampler
    follows all its live ones: two processes started as the shards are (sessions of their
    own) are both counted."""
    from loadproof.conditions import CpuWatch

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
    watch = CpuWatch({"target": None}).start()
    procs = [subprocess.Popen([sys.executable, "-c", burn], start_new_session=True)
             for _ in range(2)]
    for proc in procs:
        proc.wait(timeout=60)
    cpu = watch.stop()
    assert cpu["k6_cpu_cores"] * cpu["window_s"] >= 2 * 0.6


def test_early_stop_counts_every_generators_csv(tmp_path: Path) -> None:
    from loadproof.capacity import EarlyStop, TrialStage, make_settings

    from tests.test_capacity import HEADER, csv_rows

    settings = make_settings(slo_p95_ms=100, slo_success=0.99, min_rate=10, max_rate=1000,
                             trial_duration="10s", warmup="0s", cooldown="0s", budget="1h")
    raws = [tmp_path / "0.csv", tmp_path / "1.csv"]
    stop = EarlyStop(raws, settings, TrialStage(1, 100, "rate", 10.0, 0.0))
    # each generator alone has 35 slow requests (under 5% of the ~1,200 projected);
    # together 70, more than the trial's p95 allows
    for raw in raws:
        raw.write_text(HEADER + csv_rows(65, ms=10.0) + csv_rows(
            35, ms=900.0, start_us=1_700_000_001_000_000))
    why = stop(2.0)
    assert stop.requests == 200 and stop.slow == 70
    assert why is not None and "p95 cannot meet" in why


@pytest.mark.slow
def test_capacity_search_with_two_generators(runs_dir: Path) -> None:
    from loadproof.capacity import make_settings, run_capacity_search

    settings = make_settings(slo_p95_ms=500, slo_success=0.99, min_rate=40, max_rate=80,
                             trial_duration="1s", warmup="0s", cooldown="0s", budget="2m",
                             confirm=0)
    with counting_server() as (url, served):
        result = run_capacity_search(settings, label="cap", target=url, out_dir=runs_dir,
                                     progress=QUIET, generators=2)
        answered = served[0]
    run = load_run(result.path)
    assert run.manifest["generators"] == 2
    assert all(len(s["shards"]) == 2 for s in run.stages)
    assert sum(s["requests"] for s in run.stages) == answered
    assert [t.reason for t in result.trials if not t.passed] == []
    assert result.capacity == 80 and result.limited_by == "max-rate"


@pytest.mark.slow
def test_rendered_manifests_run_as_the_operator_would_and_import_as_one_stage(
        tmp_path: Path) -> None:
    """What k6-operator does with a rendered TestRun, done locally: the ConfigMap's files in
    the script folder, the runner env and arguments, one k6 per runner with its execution
    segment, each writing to its own folder; then import --shards of those files."""
    import shlex

    from loadproof.k6bin import find_k6

    with counting_server() as (url, served):
        settings = K8sSettings(target=url, plan=make_plan("40", model="rate",
                                                          stage_duration="2s"), generators=2)
        render(settings, tmp_path / "k8s")
        config_map, test_run = yaml.safe_load_all((tmp_path / "k8s" / "s1-40rps.yaml")
                                                  .read_text())
        script_dir = tmp_path / "test"
        script_dir.mkdir()
        for name, text in config_map["data"].items():
            (script_dir / name).write_text(text)
        spec = test_run["spec"]
        procs = []
        for runner in range(spec["parallelism"]):
            results = tmp_path / "results" / f"pod-{runner}"
            results.mkdir(parents=True)
            env = {e["name"]: e["value"].replace("/results", str(results))
                   for e in spec["runner"]["env"] if "value" in e}
            args = [a.replace("/results", str(results))
                    for a in shlex.split(spec["arguments"])]
            procs.append(subprocess.Popen(
                [str(find_k6()), "run", "--quiet", *args,
                 *shards.segment_args(runner, spec["parallelism"]),
                 str(script_dir / spec["script"]["configMap"]["file"])],
                env={**os.environ, **env}, cwd=script_dir, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        for proc in procs:
            assert proc.wait(timeout=60) == 0
        answered = served[0]
    raws = sorted((tmp_path / "results").glob("*/raw.csv"))
    assert len(raws) == 2 and all((p.parent / "summary.json").is_file() for p in raws)
    run = import_shards(raws, label="k8s", out_dir=tmp_path / "runs")
    record = run.stages[0]
    assert record["key"] == "s1-40rps" and record["level"] == 40
    assert record["requests"] == answered and len(record["shards"]) == 2
    assert all(s["requests"] > 0 for s in record["shards"])
