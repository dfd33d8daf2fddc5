"""Running a stage plan: preflight, the reference service when asked, k6 per stage, and the
stage's files saved as soon as it ends (a crash later never loses a finished stage).

Two load modes. Loadproof drives the load (its stages and executors; a user script's own
load-shaping options are refused unless overridden, and the script runs through a generated
wrapper so that the planned VUs or arrival rate, with the warm-up as a scenario of its own, is
what k6 sends). Or the script drives the load (``--plan script``, the default for a script
with its own shape and no ``--stages``): k6 runs it as written, once per repeat, and each of
its scenarios (or each ``options.stages`` step) is stored as a stage."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import polars as pl

from . import conditions, faults, promscrape, rawpipe, shards
from .conditions import CpuWatch
from .errors import LoadproofError, ServiceError, TargetError, UsageError
from .ingest import count_dropped_iterations, csv_to_parquet, sink_atomically, summary_values
from .k6bin import GO_GC_KEYS, find_k6, k6_gc_defaults, k6_version
from .outcome import (
    aborted_on,
    host_port,
    hosts_hit,
    scenarios_started_at,
    threshold_results,
    vus_observed,
)
from .plan import SCRIPT_MODEL, Stage, StagePlan, format_duration, parse_duration, script_plan
from .progress import CsvTail, Progress
from .scripts import (
    ScriptOptions,
    driven_wrapper,
    inspect_script,
    is_shipped,
    lib_sha256,
    resolve_script,
    script_wrapper,
    sha256_file,
)
from .store import (
    DEFAULT_RUNS_DIR,
    FORMAT_VERSION,
    Run,
    create_run_dir,
    git_commit,
    iso,
    machine_info,
    read_json,
    utcnow,
)

# k6's own exit codes (errext/exitcodes/codes.go) that we name in manifests.
K6_EXIT_CODES = {
    0: "ok",
    97: "cloud test run failed",
    99: "thresholds crossed (results are valid)",
    100: "k6 aborted by a setup or teardown error",
    101: "generic timeout",
    103: "invalid or missing output",
    104: "invalid configuration",
    105: "interrupted by an external signal",
    106: "cannot start the test",
    107: "script exception",
    108: "script aborted (test.abort())",
    110: "k6 could not open a network connection to an output",
}
PREFLIGHT_TIMEOUT_S = 5.0
_K6_ERROR = re.compile(r'level=error msg="((?:[^"\\]|\\.)*)"')
STOP_GRACE_S = 30.0  # k6's time to stop gracefully (and write its summary) after SIGINT
BOUND_SLACK_S = 120.0  # k6 is stopped this long after its stage (or test) should have ended
PLAN_MODES = ("auto", "stages", "script")
# sub-metrics of the measured scenario, so k6's summary carries them apart from the warm-up
MAIN_THRESHOLDS: dict[str, list[Any]] = {
    "http_req_duration{scenario:main}": [], "http_req_failed{scenario:main}": [],
    "http_reqs{scenario:main}": [], "dropped_iterations{scenario:main}": [],
}


class Interrupted(LoadproofError):
    """Ctrl-C during a run: finished stages are kept, the run is marked incomplete."""

    exit_code = 130

    def __init__(self, run: Run) -> None:
        super().__init__(f"interrupted; finished stages are kept in {run.path} "
                         f"(status: {run.status})", path=run.path)
        self.run = run


def preflight(target: str) -> None:
    """Fail fast, with no load sent, when the target does not answer HTTP within 5 s."""
    parsed = urlparse(target)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"--target {target!r}: expected an http:// or https:// URL")
    try:
        httpx.get(target, timeout=PREFLIGHT_TIMEOUT_S, follow_redirects=False)
    except httpx.TimeoutException:
        raise TargetError(f"target {target} did not answer within {PREFLIGHT_TIMEOUT_S:.0f} s; "
                          "no load was sent", url=target) from None
    except httpx.HTTPError as exc:
        kind = "does not speak HTTP" if isinstance(exc, httpx.RemoteProtocolError) \
            else "is unreachable"
        raise TargetError(f"target {target} {kind} ({exc.__class__.__name__}: {exc}); "
                          "no load was sent", url=target) from None


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # k6 leads a session (and process group) of its own


def stop_k6(proc: subprocess.Popen[bytes], grace_s: float | None = None) -> None:
    """Stop k6 on any exit path: SIGINT to its process group (k6 stops gracefully and writes
    its summary), a bounded wait, then SIGKILL to the group (whatever is left in it, whether
    or not k6 itself stopped); always reaped. A second Ctrl-C during the wait goes straight
    to SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        _signal_group(proc, signal.SIGINT)
        proc.wait(STOP_GRACE_S if grace_s is None else grace_s)
    except BaseException as exc:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
    else:
        _signal_group(proc, signal.SIGKILL)  # the group outlives its leader while members live


def stage_env(stage: Stage, repeat: int, target: str, summary_path: Path) -> dict[str, str]:
    return {
        "LP_TARGET": target,
        "LP_MODEL": stage.model,
        "LP_LEVEL": str(stage.level),
        "LP_DURATION": format_duration(stage.duration_s),
        "LP_WARMUP": format_duration(stage.warmup_s) if stage.warmup_s else "",
        "LP_STAGE": stage.key,
        "LP_REPEAT": str(repeat),
        "LP_SUMMARY_PATH": str(summary_path),
        "K6_CSV_TIME_FORMAT": "unix_micro",
        "K6_NO_USAGE_REPORT": "true",
    }


@dataclass
class K6Outcome:
    code: int
    interrupted: bool  # Ctrl-C
    timed_out: bool  # ran past its bound and was stopped
    conditions: dict[str, Any]  # CPU of k6, the target and the rest while k6 ran
    watch: CpuWatch | None = None  # its once-a-second resource timeline
    stopped_early: str | None = None  # why the caller's stop_when ended k6 before its end
    scraper: promscrape.Scraper | None = None  # the server's metrics around the window


@dataclass
class RunSession:
    """One run being written. ``open`` it, run repeats (the pipeline interleaves arms this
    way), then ``close``; ``run_stages`` does all three.

    ``plan_mode``: "stages" (loadproof drives the load), "script" (the script does) or
    "auto" (the script does when it shapes its own load and ``stages_given`` is false).
    ``override_script_options`` lets loadproof's stages replace a script's own shape."""

    plan: StagePlan
    label: str
    target: str | None = None
    profile: str | None = None
    script: str = "journey"
    out_dir: Path = DEFAULT_RUNS_DIR
    env: Mapping[str, str] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    service_overrides: dict[str, Any] = field(default_factory=dict)
    keep_raw: bool = False
    plan_mode: str = "auto"
    stages_given: bool = True
    override_script_options: bool = False
    generators: int = 1  # k6 processes per stage, one execution segment each (runner/shards.py)
    # the server's Prometheus metrics (--prometheus; the reference service's own /metrics
    # when loadproof started it) and the series read from them
    prometheus: str | None = None
    prometheus_requests: str = promscrape.DEFAULT_REQUESTS_METRIC
    prometheus_latency: str = promscrape.DEFAULT_LATENCY_METRIC
    target_pid: int | None = None  # --target-pid: sample a target loadproof did not start
    prometheus_rw: str | None = None  # --prometheus-rw: k6's metrics to a remote-write URL
    fault_specs: list[faults.FaultSpec] = field(default_factory=list)  # in every repeat
    # what k6's per-request output becomes while a stage runs (runner/rawpipe.py), recorded
    # in each stage record as raw_output: "csv.gz" (compressed as k6 writes it) or "csv"
    raw_output: str = rawpipe.DEFAULT_RAW_OUTPUT
    run: Run | None = None
    _service: Any = None
    # the target's processes (service and database) when loadproof started it; None: unknown
    _target_pids: list[int] | None = None
    _script_options: ScriptOptions | None = None

    def open(self) -> Run:
        if (self.target is None) == (self.profile is None):
            raise UsageError("give exactly one of --target URL or --profile NAME")
        shards.check_generators(self.generators)
        rawpipe.check_raw_output(self.raw_output)
        if self.plan_mode not in PLAN_MODES:
            raise UsageError(f"--plan {self.plan_mode!r}: use stages (loadproof drives the "
                             "load), script (the script does) or auto")
        script_path = resolve_script(self.script)
        k6 = find_k6()
        version = k6_version(k6)
        self._k6_env = {**k6_gc_defaults(), **os.environ, **self.env}
        self._k6 = k6
        self._script_path = script_path
        self._choose_mode()
        if self.generators > 1 and self.script_driven:
            raise UsageError("--generators splits loadproof's stages over several k6 "
                             "processes; a script-driven run (--plan script) is not split: "
                             "drop --generators or use --plan stages")
        faults.check_faults(self.fault_specs, self.plan, has_service=self.profile is not None,
                            script_driven=self.script_driven)
        profile_info = None
        if self.profile is not None:
            from loadproof.orchestrator.settings import ProfileError, load_settings

            try:
                profile_info = {"name": self.profile,
                                "settings": load_settings(self.profile,
                                                          **self.service_overrides).knobs()}
            except ProfileError as exc:
                raise UsageError(f"--profile: {exc}") from exc
        else:
            assert self.target is not None
            preflight(self.target)
            if self.target_pid is not None:
                self._target_pids = conditions.target_pids(self.target_pid)
            if self.prometheus is not None:
                promscrape.preflight(promscrape.ServerMetrics(
                    self.prometheus, self.prometheus_requests, self.prometheus_latency))
        run_id, path = create_run_dir(Path(self.out_dir), self.label)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "run_id": run_id,
            "label": self.label,
            "status": "running",
            "status_reason": None,
            "target": self.target,
            "profile": profile_info,
            "plan": self.plan.to_dict(),
            "load_mode": "script" if self.script_driven else "loadproof",
            "script": {"path": str(script_path), "name": script_path.stem,
                       "sha256": sha256_file(script_path), "shipped": is_shipped(script_path),
                       "lib_sha256": lib_sha256() if is_shipped(script_path) else None,
                       "overridden_options": (self._script_options.shape_options()
                                              if self._script_options is not None
                                              and not self.script_driven else [])},
            "k6": {"binary": str(k6), "version": version,
                   "go_env": {key: self._k6_env[key] for key in GO_GC_KEYS}},
            "generators": self.generators,
            "commit_info": git_commit(),
            "machine_info": machine_info(),
            "started_at": iso(utcnow()),
            "ended_at": None,
            "warnings": [],
            "stages": [],
        }
        if self.fault_specs:
            manifest["faults"] = [fault.to_dict() for fault in self.fault_specs]
        self.run = Run(path, manifest)
        self.run.save()
        return self.run

    @property
    def script_driven(self) -> bool:
        return self.plan.model == SCRIPT_MODEL

    def _choose_mode(self) -> None:
        """Decide who drives the load; refuse, before any load, a script whose own shape
        would fight loadproof's stages."""
        shipped = is_shipped(self._script_path)
        if shipped:
            if self.plan_mode == "script":
                raise UsageError(f"--plan script: the shipped script {self._script_path.stem!r} "
                                 "takes loadproof's stages; give your own script with --script")
            return
        env = {**self._k6_env, **stage_env(self.plan.stages[0], 1,
                                            self.target or "http://127.0.0.1",
                                            Path(os.devnull))}
        options = inspect_script(self._k6, self._script_path, env)
        self._script_options = options
        shape = options.shape_options() if options is not None else []
        name = self._script_path.name
        if self.plan_mode == "script" or (self.plan_mode == "auto" and shape
                                           and not self.stages_given):
            if options is None:
                raise UsageError(f"--plan script: k6 cannot evaluate {name}'s options "
                                 f"(run 'k6 inspect {self._script_path}' to see why)")
            if self.stages_given and self.plan_mode == "script":
                raise UsageError(f"--stages and --plan script conflict: with --plan script "
                                 f"{name} shapes its own load; drop --stages")
            if self.plan.warmup_s:
                raise UsageError(f"--warmup and a script-driven run conflict: {name} shapes "
                                 "its own load, so a warm-up belongs in the script (a scenario "
                                 "of its own); drop --warmup or use --plan stages")
            if self.override_script_options:
                raise UsageError("--override-script-options and --plan script conflict: the "
                                 "first replaces the script's shape, the second keeps it")
            self.plan = script_plan(options.options, repeat=self.plan.repeat)
            return
        if shape and not self.override_script_options:
            raise UsageError(
                f"--script {name} shapes its own load ({'; '.join(shape)}) and loadproof's "
                f"--stages would replace it: run it as written with --plan script, or let "
                f"loadproof's stages replace it with --override-script-options")
        if options is not None:
            # k6 evaluates the wrapper now, so a script loadproof cannot drive is refused
            # before any load (and not as k6 exit 104/107 with the cause only in k6.log)
            stage = self.plan.stages[0]
            problem = self._check_wrapper(driven_wrapper(
                self._script_path, scenarios=stage.k6_scenarios(),
                tags={"stage": stage.key, "repeat": "1"}, thresholds=MAIN_THRESHOLDS,
                functions=options.exec_functions()), env)
            if problem:
                raise UsageError(f"--script {name}: {problem}")

    def _check_wrapper(self, source: str, env: Mapping[str, str]) -> str | None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="loadproof-") as tmp:
            wrapper = Path(tmp) / "wrapper.js"
            wrapper.write_text(source)
            if inspect_script(self._k6, wrapper, env) is not None:
                return None
            out = subprocess.run([str(self._k6), "inspect", "--include-system-env-vars",
                                  str(wrapper)], capture_output=True, text=True, timeout=60,
                                 env=dict(env), check=False)
        found = re.search(r'msg="(?:GoError: |Error: )?(.*?)(?:\\n|")', out.stderr)
        return found.group(1) if found else (out.stderr.strip()[-300:] or "k6 inspect failed")

    def _start_service(self) -> None:
        from loadproof.orchestrator.server import ServiceProcess, ServiceStartError

        assert self.run is not None and self.profile is not None
        self.progress.line(f"starting reference service (profile {self.profile}, embedded "
                           "PostgreSQL)")
        service = ServiceProcess(self.profile, log_path=self.run.path / "service.log",
                                 overrides=self.service_overrides)
        try:
            service.start()
        except ServiceStartError as exc:
            self._finish("failed", f"reference service did not start: {exc}")
            raise ServiceError(str(exc), path=self.run.path / "service.log") from exc
        self._service = service
        self._target_pids = conditions.service_pids(service)
        self.target = service.url
        self.run.manifest["target"] = service.url
        self.run.save()

    def start_service(self) -> None:
        """Start the reference service now (a profile arm), not at the first stage: a capacity
        search's budget then counts trials only."""
        if self.profile is not None and self._service is None:
            self._start_service()

    def stop_service(self) -> dict[str, Any] | None:
        """Stop the reference service and wait until it and its database have exited (the
        next repeat, or the other arm, starts on a machine without them)."""
        if self._service is None:
            return None
        pids, self._target_pids = self._target_pids or [], None
        if self._service.proc is not None and self._service.proc.poll() is not None:
            # the service exited by itself: a crash, which no "zero crashes" claim may hide
            assert self.run is not None
            self.run.manifest.setdefault("service_exits", []).append(
                {"exit_code": self._service.proc.returncode, "noticed_at": iso(utcnow())})
        try:
            self._service.stop()
        finally:
            self._service = None
        gone = conditions.wait_gone(pids)
        if gone["left_running"]:
            self.progress.line(f"warning: processes {gone['left_running']} of the reference "
                               f"service were still running {gone['waited_s']:.0f} s after it "
                               "stopped")
        return gone

    def run_repeat(self, repeat: int) -> None:
        """Run every stage of the plan once, as repeat number ``repeat`` (1-based)."""
        assert self.run is not None, "open() first"
        if not self.run.stages:  # the run's window starts with its first stage
            self.run.manifest["started_at"] = iso(utcnow())
        if self.profile is not None and self._service is None:
            self._start_service()
        if self.script_driven:
            self._run_script(repeat)
            return
        for stage in self.plan.stages:
            self._run_stage(stage, repeat)

    def run_stage(self, stage: Stage, repeat: int = 1,
                  stop_when: Callable[[float], str | None] | None = None) -> dict[str, Any]:
        """Run one given stage (a capacity-search trial, say) and return its stage record.
        ``stop_when(elapsed_s)`` is asked about once a second while k6 runs; a reason it
        returns stops k6 gracefully, and the record keeps it as ``stopped_early``."""
        assert self.run is not None, "open() first"
        if not self.run.stages:
            self.run.manifest["started_at"] = iso(utcnow())
        if self.profile is not None and self._service is None:
            self._start_service()
        self._run_stage(stage, repeat, stop_when)
        return self.run.stages[-1]

    def _drive_k6(self, cmd: list[str], env: Mapping[str, str], cwd: Path, title: str,
                  raw_csv: Path, limit_s: float,
                  stop_when: Callable[[float], str | None] | None = None,
                  scraper: promscrape.Scraper | None = None) -> K6Outcome:
        """Run k6 with a live status line until it exits; k6 is stopped (its whole process
        group) on every way out of here: its time bound, Ctrl-C, ``stop_when``, or any
        exception."""
        interrupted = timed_out = False
        stopped: str | None = None
        tail = CsvTail(str(raw_csv))
        window: list[tuple[float, int]] = []
        proc: subprocess.Popen[bytes] | None = None
        # the sink is finished (the rest of k6's output read) after k6 is stopped and reaped
        with rawpipe.RawSink(raw_csv) as sink, open(cwd / "k6.log", "w") as log:
            try:
                # inside the try: a Ctrl-C just after k6 starts still stops it (k6 runs in a
                # session of its own, so the terminal's SIGINT does not reach it)
                # the target's CPU is known when loadproof started it; k6's is read when reaped
                watch = conditions.CpuWatch({"target": self._target_pids}).start()
                if scraper is not None:
                    scraper.start()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(env),
                                        cwd=cwd, start_new_session=True)
                started = time.monotonic()
                while True:
                    try:  # back as soon as k6 exits, else once a second for the status line
                        proc.wait(timeout=1.0)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    tail.poll()
                    elapsed = time.monotonic() - started
                    # k6 appends to its CSV about once a second: rate over the last window
                    window.append((elapsed, tail.requests))
                    while len(window) > 2 and window[-1][0] - window[0][0] > 3.0:
                        window.pop(0)
                    span = window[-1][0] - window[0][0]
                    rate = ((window[-1][1] - window[0][1]) / span) if span > 0 else 0.0
                    shown = f"{rate:7.1f} req/s" if tail.requests else "waiting for k6's first results"
                    self.progress.status(
                        f"{title}: {elapsed:5.1f}s  {shown}  requests {tail.requests}"
                        f"  errors {tail.recent_error_share:.1%}"
                        f"  429 {tail.recent_rate_limited_share:.1%} (latest samples)")
                    if elapsed > limit_s:
                        timed_out = True
                        break
                    if stop_when is not None and (stopped := stop_when(elapsed)) is not None:
                        break
            except KeyboardInterrupt:
                if proc is None:  # k6 never started; the run's close marks this stage
                    raise
                interrupted = True
            finally:
                if proc is not None:
                    stop_k6(proc)  # a no-op when k6 has already exited
                sink.stop()
                if scraper is not None:
                    scraper.stop()  # the window's last scrape, after k6's last request
                self.progress.done()
        assert proc is not None
        return K6Outcome(proc.returncode, interrupted, timed_out, watch.stop(), watch, stopped,
                         scraper)

    def _scraper(self, stage: Stage, stage_dir: Path) -> tuple[promscrape.Scraper | None, float]:
        """The stage's server-metrics scraper and the gap it needs before the measured scenario
        (none when the server's metrics are unknown or k6 runs a script it cannot evaluate)."""
        source = self._metrics_source()
        drivable = is_shipped(self._script_path) or self._script_options is not None
        if source is None or not drivable:
            return None, 0.0
        return promscrape.stage_scraper(source, stage_dir / "k6.log", stage.warmup_s,
                                        is_shipped(self._script_path), self.generators)

    def _metrics_source(self) -> promscrape.ServerMetrics | None:
        """Where the server's metrics are: --prometheus, or the reference service's own."""
        url = self.prometheus or (f"{self.target}/metrics" if self._service is not None
                                  else None)
        return None if url is None else promscrape.ServerMetrics(
            url, self.prometheus_requests, self.prometheus_latency)

    def _k6_cmd(self, raw_csv: Path, summary_tmp: Path, entry: Path) -> list[str]:
        # absolute paths: k6 runs in the stage's folder (so files a script's handleSummary
        # writes land there, not in the caller's folder)
        cmd = [str(self._k6), "run", "--no-color", "--quiet", "--out",
               f"csv={rawpipe.k6_target(raw_csv).resolve()}"]
        if self.prometheus_rw:
            cmd += ["--out", "experimental-prometheus-rw"]  # its URL: K6_PROMETHEUS_RW_...
        if not is_shipped(self._script_path):
            # user scripts: the summary in the legacy export format
            cmd += ["--summary-export", str(summary_tmp.resolve())]
        return cmd + [str(entry.resolve())]

    def _run_stage(self, stage: Stage, repeat: int,
                   stop_when: Callable[[float], str | None] | None = None) -> None:
        assert self.run is not None and self.target is not None
        run = self.run
        stage_dir_name = f"r{repeat}-{stage.key}"
        stage_dir = run.path / "stages" / stage_dir_name
        stage_dir.mkdir(parents=True, exist_ok=False)
        raw_csv = rawpipe.raw_file(stage_dir, self.raw_output)
        summary_tmp = stage_dir / ".summary.json.tmp"
        record: dict[str, Any] = {
            "dir": stage_dir_name, "key": stage.key, "index": stage.index, "repeat": repeat,
            "level": stage.level, "model": stage.model, "duration_s": stage.duration_s,
            "warmup_s": stage.warmup_s, "status": "running", "started_at": iso(utcnow()),
            "raw_output": self.raw_output,
        }
        run.manifest["stages"].append(record)
        run.save()
        scraper, gap_s = self._scraper(stage, stage_dir)
        if gap_s:
            record["window_gap_s"] = gap_s
        entry = self._script_path
        extra: list[str] = []
        if not is_shipped(self._script_path) and self._script_options is None:
            # k6 could not evaluate the script's options: run it as it is, so that k6's own
            # error (exit code and message) is what the stage records
            extra = ["--tag", f"stage={stage.key}", "--tag", f"repeat={repeat}"]
        elif not is_shipped(self._script_path):
            # the script's functions under loadproof's scenarios: the planned VUs or arrival
            # rate, the warm-up as a scenario of its own (kept out of the figures)
            entry = stage_dir / "loadproof-wrapper.js"
            entry.write_text(driven_wrapper(
                self._script_path, scenarios=stage.k6_scenarios(self.generators, gap_s),
                tags={"stage": stage.key, "repeat": str(repeat)}, thresholds=MAIN_THRESHOLDS,
                functions=(self._script_options.exec_functions()
                           if self._script_options is not None else [])))
        cmd = self._k6_cmd(raw_csv, summary_tmp, entry)
        cmd[-1:-1] = extra
        env = {**self._k6_env, **stage_env(stage, repeat, self.target, summary_tmp.resolve()),
               **promscrape.k6_env(gap_s, self.prometheus_rw)}
        if (spec := faults.fault_for(self.fault_specs, stage)) is not None:
            env["LP_FAULT"] = spec.name  # the journey re-reads unverified writes only then
        title = f"[{run.label}] repeat {repeat}/{self.plan.repeat} {stage.label}"
        self.progress.line(f"{title}: running for {format_duration(stage.duration_s)}"
                           + (f" after {format_duration(stage.warmup_s)} warm-up"
                              if stage.warmup_s else ""))
        limit_s = stage.duration_s + stage.warmup_s + gap_s + BOUND_SLACK_S
        sharded = None
        fault = self._begin_fault(stage, repeat, stage_dir)
        try:
            if self.generators > 1:  # N k6 processes, one execution segment each
                if scraper is not None:
                    scraper.start()
                try:
                    sharded = shards.drive(self, cmd, env, stage_dir, title, raw_csv,
                                           summary_tmp, limit_s,
                                           faults.combine_stop_when(fault, stop_when))
                finally:
                    if scraper is not None:
                        scraper.stop()  # after every generator exited
                outcome = sharded.outcome
                outcome.scraper = scraper
            else:
                outcome = self._drive_k6(cmd, env, stage_dir, title, raw_csv, limit_s=limit_s,
                                         stop_when=faults.combine_stop_when(fault, stop_when),
                                         scraper=scraper)
        finally:
            fault_record = fault.finish() if fault is not None else None  # its stop, always
        if outcome.stopped_early is not None:
            record["stopped_early"] = outcome.stopped_early
        self._record_exit(record, outcome, stage_dir)
        try:
            if sharded is not None:
                shards.save_files(self, record, stage_dir, stage.key, repeat, sharded)
            else:
                self._save_stage_files(record, stage_dir, raw_csv, summary_tmp, stage.key,
                                       repeat)
            self._record_window([record], [stage], stage_dir, outcome)
            if outcome.watch is not None:
                conditions.record_stage(outcome.watch, record, stage_dir)
            promscrape.record_stage(outcome.scraper, record, stage_dir, raw_csv if sharded is None
                                    else [s.raw_csv for s in sharded.shards])
            if sharded is not None:
                shards.drop_raw(self, record, sharded)
            self._drop_raw([record], raw_csv)
        except Exception as exc:  # a broken stage must not lose the finished ones
            record["status"] = "failed"
            record["status_reason"] = f"could not save stage data: {exc}"
            run.save()
            raise
        self._set_status(record, outcome)
        if sharded is not None:
            shards.settle_status(record)
        if fault_record is not None:
            faults.apply_to_record(record, fault_record)
            self.progress.line(f"[{self.label}] {faults.describe(fault_record)}")
            self._target_pids = (self._target_pids or []) + (fault.pids_started if fault else [])
        self._warn_hosts(record)
        run.save()
        code = outcome.code
        summary = (f"{title}: {record['status']}, {record.get('requests', 0)} requests"
                   + (f", k6 exit {code} ({record['k6_exit_meaning']})" if code else "")
                   + (f": {record['k6_error']}" if record.get("k6_error") else "")
                   + _crossed_note(record))
        self.progress.line(summary)
        if outcome.interrupted:
            raise KeyboardInterrupt

    def _begin_fault(self, stage: Stage, repeat: int, stage_dir: Path) -> faults.FaultRun | None:
        spec = faults.fault_for(self.fault_specs, stage)
        if spec is None:
            return None
        assert self.run is not None and self.target is not None
        service = self._service
        self.progress.line(f"[{self.label}] fault {spec.name}: {spec.action or 'commands'} at "
                           f"{spec.at_s:g}s for {spec.duration_s:g}s of {stage.key}")
        return faults.FaultRun(
            spec, stage=stage, repeat=repeat, stage_dir=stage_dir, run_dir=self.run.path,
            env={"LP_ARM": self.label, "LP_TARGET": self.target, "LP_STAGE": stage.key,
                 "LP_REPEAT": str(repeat), "LP_RUN_DIR": str(self.run.path.resolve()),
                 "LP_FAULT": spec.name},
            database=(lambda: faults.EmbeddedDatabase(service)) if service is not None
            else None).begin()

    def _run_script(self, repeat: int) -> None:
        """The script drives the load: one k6 process runs it as written; each scenario (or
        options.stages step) becomes a stage record over the shared request data."""
        assert self.run is not None and self.target is not None
        run = self.run
        stages = self.plan.stages
        dir_name = f"r{repeat}-script"
        stage_dir = run.path / "stages" / dir_name
        stage_dir.mkdir(parents=True, exist_ok=False)
        raw_csv = rawpipe.raw_file(stage_dir, self.raw_output)
        summary_tmp = stage_dir / ".summary.json.tmp"
        by_scenario = all(s.source and "scenario" in s.source for s in stages)
        records = []
        for stage in stages:
            records.append({
                "dir": dir_name, "key": stage.key, "index": stage.index, "repeat": repeat,
                "level": stage.level, "model": stage.model,
                "duration_s": stage.duration_s or None, "warmup_s": 0.0,
                "planned": stage.source, "status": "running", "started_at": iso(utcnow()),
                "raw_output": self.raw_output})
        run.manifest["stages"].extend(records)
        run.save()
        entry = stage_dir / "loadproof-wrapper.js"
        entry.write_text(script_wrapper(self._script_path, scenario_tags={
            str(s.source["scenario"]): {"stage": s.key, "repeat": str(repeat)}
            for s in stages if by_scenario and s.source}))
        cmd = self._k6_cmd(raw_csv, summary_tmp, entry)
        if not by_scenario:
            cmd[-1:-1] = ["--tag", f"repeat={repeat}"]
        env = {**self._k6_env, **stage_env(stages[0], repeat, self.target,
                                           summary_tmp.resolve())}
        title = f"[{run.label}] repeat {repeat}/{self.plan.repeat} {self._script_path.name}"
        self.progress.line(f"{title}: the script drives the load ("
                           + ", ".join(s.label for s in stages) + ")")
        source = self._metrics_source()
        outcome = self._drive_k6(cmd, env, stage_dir, title, raw_csv,
                                 limit_s=self._script_limit_s(env),
                                 scraper=promscrape.script_scraper(source, stage_dir / "k6.log")
                                 if source is not None else None)
        for record in records:
            self._record_exit(record, outcome, stage_dir)
        try:
            self._save_script_files(records, stages, stage_dir, raw_csv, summary_tmp, repeat,
                                    by_scenario)
            self._record_window(records, stages, stage_dir, outcome)
            if outcome.watch is not None:
                conditions.record_script(outcome.watch, records, stage_dir)
            promscrape.record_script(outcome.scraper, records, stage_dir, raw_csv)
            self._drop_raw(records, raw_csv)
        except Exception as exc:
            for record in records:
                record["status"] = "failed"
                record["status_reason"] = f"could not save stage data: {exc}"
            run.save()
            raise
        for record in records:
            self._set_status(record, outcome)
        self._warn_hosts(records[0])
        run.save()
        for stage, record in zip(stages, records, strict=True):
            self.progress.line(f"{title} {stage.label}: {record['status']}, "
                               f"{record.get('requests', 0)} requests")
        self.progress.line(f"{title}: k6 exit {outcome.code} "
                           f"({records[0]['k6_exit_meaning']}){_crossed_note(records[0])}")
        if outcome.interrupted:
            raise KeyboardInterrupt

    def _script_limit_s(self, env: Mapping[str, str]) -> float:
        """k6's own bound on the test (totalDuration, graceful stops included), plus slack."""
        try:
            out = subprocess.run([str(self._k6), "inspect", "--execution-requirements",
                                  "--include-system-env-vars", str(self._script_path)],
                                 capture_output=True, text=True, timeout=60, env=dict(env),
                                 check=False)
            total = json.loads(out.stdout).get("totalDuration")
            return parse_duration(total or "10m30s", what="totalDuration") + BOUND_SLACK_S
        except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError, UsageError):
            return 3600.0

    def _record_exit(self, record: dict[str, Any], outcome: K6Outcome, stage_dir: Path) -> None:
        code = outcome.code
        record["ended_at"] = iso(utcnow())
        record["conditions"] = outcome.conditions
        record["k6_exit_code"] = code
        record["k6_exit_meaning"] = K6_EXIT_CODES.get(code, "unknown k6 exit code")
        if code == 99:
            record["thresholds"] = "crossed"
        elif code == 0:
            record["thresholds"] = "passed"
        log = _read(stage_dir / "k6.log")
        aborted = aborted_on(log)
        if aborted is not None:
            record["aborted_on"] = aborted
        if code != 0 and code != 99:
            record["k6_message"] = _tail(stage_dir / "k6.log")
            errors = _K6_ERROR.findall(log)
            if errors:  # k6's own words for why, so nobody has to open k6.log
                record["k6_error"] = errors[-1].replace('\\"', '"').split("\\n")[0]

    def _set_status(self, record: dict[str, Any], outcome: K6Outcome) -> None:
        code = outcome.code
        if outcome.interrupted:
            record["status"] = "incomplete"
            record["status_reason"] = "interrupted (Ctrl-C); partial data kept"
        elif outcome.timed_out:
            record["status"] = "incomplete"
            record["status_reason"] = "k6 ran past its time bound and was stopped"
        elif record.get("aborted_on") is not None:
            crossed = [f"{t['metric']} {t['threshold']}" for t in
                       record.get("threshold_results") or []
                       if t["ok"] is False and t["abort_on_fail"]]
            record["status"] = "aborted"
            record["status_reason"] = (
                "k6 aborted the test on a threshold with abortOnFail ("
                + ", ".join(crossed or record["aborted_on"]) + ")"
                + (f" after {record['measured_s']:.1f} s" if record.get("measured_s")
                   is not None else ""))
        elif code in (0, 99) or (code == 105 and outcome.stopped_early is not None):
            record["status"] = "complete"  # 105: k6's exit on the signal that stopped it early
        else:
            record["status"] = "failed"
            record["status_reason"] = (f"k6 exited {code}: {record['k6_exit_meaning']}"
                                       + (f": {record['k6_error']}" if record.get("k6_error")
                                          else ""))

    def _read_summary(self, records: list[dict[str, Any]], stage_dir: Path,
                      summary_tmp: Path) -> dict[str, Any] | None:
        if not summary_tmp.is_file():
            return None
        assert self.run is not None
        os.replace(summary_tmp, stage_dir / "summary.json")
        summary: dict[str, Any] = read_json(stage_dir / "summary.json", what="k6 summary")
        declared = (self._script_options.options.get("thresholds")
                    if self._script_options is not None else None)
        results = [t for t in threshold_results(summary, declared)
                   if t["metric"] not in MAIN_THRESHOLDS]
        for record in records:
            record["summary_file"] = f"stages/{stage_dir.name}/summary.json"
            record["threshold_results"] = results
            record["threshold_scope"] = "test" if self.script_driven else "stage"
        return summary

    def _save_stage_files(self, record: dict[str, Any], stage_dir: Path, raw_csv: Path,
                          summary_tmp: Path, stage_key: str, repeat: int) -> None:
        assert self.run is not None
        base = f"stages/{stage_dir.name}"
        summary = self._read_summary([record], stage_dir, summary_tmp)
        if summary is not None:
            record["dropped_iterations"] = _summary_count(
                summary, "dropped_iterations{scenario:main}", "dropped_iterations")
        if raw_csv.is_file() and raw_csv.stat().st_size > 0:
            rows = csv_to_parquet(raw_csv, stage_dir / "requests.parquet", stage=stage_key,
                                  repeat=repeat)
            record["requests_file"] = f"{base}/requests.parquet"
            record["requests"] = rows
            if record.get("dropped_iterations") is None:
                record["dropped_iterations"] = count_dropped_iterations(raw_csv)
            record["hosts"] = hosts_hit(raw_csv)

    def _save_script_files(self, records: list[dict[str, Any]], stages: list[Stage],
                           stage_dir: Path, raw_csv: Path, summary_tmp: Path, repeat: int,
                           by_scenario: bool) -> None:
        self._read_summary(records, stage_dir, summary_tmp)
        if not (raw_csv.is_file() and raw_csv.stat().st_size > 0):
            return
        base = f"stages/{stage_dir.name}"
        parquet = stage_dir / "requests.parquet"
        csv_to_parquet(raw_csv, parquet, stage=None if by_scenario else "unstaged",
                       repeat=repeat)
        if not by_scenario:
            # options.stages steps: each request belongs to the step it ended in, counted
            # from when k6 started the test (after setup); the tail of the graceful
            # ramp-down belongs to the last step
            start = scenarios_started_at(_read(stage_dir / "k6.log"))
            if start is None:
                raise LoadproofError(f"{stage_dir / 'k6.log'}: no test-start mark from the "
                                     "wrapper; cannot split the run into its stages")
            stage_expr = pl.lit(stages[-1].key)
            offset = 0.0
            bounds = []
            for stage in stages:
                offset += stage.duration_s
                bounds.append((start + dt.timedelta(seconds=offset), stage.key))
            for bound, key in reversed(bounds[:-1]):
                stage_expr = pl.when(pl.col("timestamp") < bound).then(pl.lit(key)) \
                    .otherwise(stage_expr)
            tmp = stage_dir / "requests.unsplit.parquet"
            os.replace(parquet, tmp)
            sink_atomically(pl.scan_parquet(tmp).with_columns(stage_expr.alias("stage")),
                            parquet)
            tmp.unlink()
        counts = dict(pl.scan_parquet(parquet).group_by("stage").agg(pl.len())
                      .collect().iter_rows())
        hosts = hosts_hit(raw_csv)
        for record in records:
            record["requests_file"] = f"{base}/requests.parquet"
            record["requests"] = int(counts.get(record["key"], 0))
            record["hosts"] = hosts
            record["dropped_iterations"] = _dropped_by_scenario(
                raw_csv, (record.get("planned") or {}).get("scenario")) if by_scenario \
                else None

    def _drop_raw(self, records: list[dict[str, Any]], raw_csv: Path) -> None:
        """k6's raw CSV is kept only with --keep-raw (requests.parquet holds the requests)."""
        if not raw_csv.is_file():
            return
        if self.keep_raw:
            for record in records:
                record["raw_file"] = f"stages/{raw_csv.parent.name}/{raw_csv.name}"
        else:
            raw_csv.unlink()

    def _record_window(self, records: list[dict[str, Any]], stages: list[Stage],
                       stage_dir: Path, outcome: K6Outcome) -> None:
        """The measured window of each stage: when its load started (k6's test start, plus
        the warm-up or the stage's start offset), its first and last request, and
        ``measured_s``, the time it really ran: the planned duration when k6 ran it to the
        end, else up to its last request (an abort, Ctrl-C or time-out cut it short)."""
        start = scenarios_started_at(_read(stage_dir / "k6.log"))
        parquet = stage_dir / "requests.parquet"
        spans: dict[str, tuple[Any, Any]] = {}
        if parquet.is_file():
            for key, first, last in (pl.scan_parquet(parquet).group_by("stage")
                                     .agg(pl.col("timestamp").min().alias("first"),
                                          pl.col("timestamp").max().alias("last"))
                                     .collect().iter_rows()):
                spans[key] = (first, last)
        cut_short = (outcome.interrupted or outcome.timed_out or outcome.stopped_early
                     or any(r.get("aborted_on") is not None for r in records))
        offset = 0.0
        for record, stage in zip(records, stages, strict=True):
            first, last = spans.get(record["key"], (None, None))
            record["first_request_at"] = iso(first) if first is not None else None
            record["last_request_at"] = iso(last) if last is not None else None
            begin_s = stage.warmup_s + float(record.get("window_gap_s") or 0.0) + offset
            if stage.source and "scenario" in stage.source:
                begin_s = parse_duration(stage.source.get("startTime") or 0, what="startTime")
            elif stage.source and "step" in stage.source:
                offset += stage.duration_s
            load_start = start + dt.timedelta(seconds=begin_s) if start is not None else None
            record["load_started_at"] = iso(load_start) if load_start is not None else None
            planned = stage.duration_s or None
            measured: float | None
            if planned and not cut_short:
                measured, source = planned, "planned duration (k6 ran the stage to its end)"
            elif load_start is not None and last is not None:
                measured = max(0.0, (last - load_start).total_seconds())
                if planned:
                    measured = min(measured, planned)
                source = "from the stage's start to its last request"
            elif first is not None and last is not None:
                measured = (last - first).total_seconds()
                source = "from the first to the last request"
            else:
                measured, source = None, "no requests"
            record["measured_s"] = round(measured, 6) if measured is not None else None
            record["measured_from"] = source
            if self.script_driven and parquet.is_file():
                # the level reached: the most VUs k6's vus metric (sampled about once a
                # second, across all scenarios) showed in the stage's window; the last
                # step's window runs on through the graceful ramp-down
                if stage.source and "step" in stage.source and stage is not stages[-1]:
                    end = (load_start + dt.timedelta(seconds=stage.duration_s)
                           if load_start is not None else None)
                else:
                    end = last if stage.source and "scenario" in stage.source else None
                record["vus_observed_max"] = _vus_in(stage_dir, load_start, end)

    def _warn_hosts(self, record: dict[str, Any]) -> None:
        """Provenance: warn when the requests went somewhere other than --target."""
        assert self.run is not None and self.target is not None
        hosts = record.get("hosts")
        expected = host_port(self.target)
        if not hosts or expected is None:
            return
        elsewhere = {h: n for h, n in hosts.items() if not _same_endpoint(h, expected)}
        if not elsewhere:
            return
        shown = ", ".join(f"{h} ({n} requests)" for h, n in elsewhere.items())
        warning = (f"stage {record['key']} (repeat {record['repeat']}): requests went to "
                   f"{shown}, not to --target {self.target} ({expected}); the script builds "
                   "its own URLs (use __ENV.LP_TARGET to follow --target)")
        warnings = self.run.manifest.setdefault("warnings", [])
        if warning not in warnings:
            warnings.append(warning)
        self.progress.line(f"warning: {warning}")

    def close(self, status: str | None = None, reason: str | None = None) -> Run:
        assert self.run is not None
        try:
            self.stop_service()
        finally:
            if status is None:
                statuses = {s["status"] for s in self.run.stages}
                expected = len(self.plan.stages) * self.plan.repeat
                if statuses == {"complete"} and len(self.run.stages) == expected:
                    status = "complete"
                elif "aborted" in statuses:
                    status, reason = "incomplete", reason or \
                        "k6 aborted a stage on a threshold (abortOnFail)"
                elif "complete" in statuses:
                    status, reason = "incomplete", reason or "some stages did not complete"
                else:
                    status, reason = "failed", reason or "no stage completed"
            self._finish(status, reason)
        return self.run

    def _finish(self, status: str, reason: str | None) -> None:
        assert self.run is not None
        for record in self.run.stages:
            # a stage the run ended during (Ctrl-C before k6 had started, or while its files
            # were being saved) is never left "running" in a finished run
            if record["status"] == "running":
                record["status"] = "failed" if status == "failed" else "incomplete"
                record["status_reason"] = f"the run ended during this stage: {reason}"
                record.setdefault("ended_at", iso(utcnow()))
        self.run.manifest["status"] = status
        self.run.manifest["status_reason"] = reason
        self.run.manifest["ended_at"] = iso(utcnow())
        self.run.save()


def _same_endpoint(a: str, b: str) -> bool:
    """'host:port' pairs naming the same endpoint: the same port and host, or host names that
    resolve to a common address (localhost and 127.0.0.1)."""
    host_a, _, port_a = a.rpartition(":")
    host_b, _, port_b = b.rpartition(":")
    if port_a != port_b:
        return False
    if host_a == host_b:
        return True

    def addresses(host: str) -> set[str]:
        try:
            return {str(info[4][0]) for info in socket.getaddrinfo(host.strip("[]"), None)}
        except (OSError, UnicodeError):
            return set()

    return bool(addresses(host_a) & addresses(host_b))


def _crossed_note(record: dict[str, Any]) -> str:
    crossed = [f"{t['metric']} {t['threshold']}" for t in record.get("threshold_results") or []
               if t["ok"] is False]
    return f"; thresholds crossed: {', '.join(crossed)}" if crossed else ""


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _vus_in(stage_dir: Path, start: dt.datetime | None, end: dt.datetime | None) -> int | None:
    raw = rawpipe.find_raw(stage_dir)
    return vus_observed(raw, start, end) if raw is not None else None


def _dropped_by_scenario(raw_csv: Path, scenario: str | None) -> int | None:
    if scenario is None:
        return None
    frame = pl.scan_csv(raw_csv, infer_schema=False, low_memory=True)
    if "scenario" not in frame.collect_schema().names():
        return None
    total = (frame.filter((pl.col("metric_name") == "dropped_iterations")
                          & (pl.col("scenario") == scenario))
             .select(pl.col("metric_value").cast(pl.Float64).sum()).collect().item())
    return int(total or 0)


def _summary_count(summary: dict[str, Any], *metrics: str) -> int | None:
    values = summary_values(summary.get("metrics") or {}, *metrics)
    return int(values.get("count") or 0) if values is not None else None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_stages(plan: StagePlan, *, label: str, target: str | None = None,
               profile: str | None = None, script: str = "journey",
               out_dir: Path | str = DEFAULT_RUNS_DIR, progress: Progress | None = None,
               env: Mapping[str, str] | None = None,
               service_overrides: dict[str, Any] | None = None, keep_raw: bool = False,
               plan_mode: str = "auto", stages_given: bool = True,
               override_script_options: bool = False, generators: int = 1,
               server: Mapping[str, Any] | None = None,
               fault_specs: list[faults.FaultSpec] | None = None,
               raw_output: str = rawpipe.DEFAULT_RAW_OUTPUT) -> Run:
    """Run ``plan`` against a target URL or a reference-service profile; return the stored Run.

    With a user script, ``plan_mode``/``stages_given``/``override_script_options`` choose who
    drives the load (see :class:`RunSession`). ``generators`` splits each stage over that many
    k6 processes (runner/shards.py). ``server``: the RunSession fields of the integrity checks
    (prometheus, prometheus_requests, prometheus_latency, prometheus_rw, target_pid).

    Ctrl-C stops k6 gracefully, keeps the finished stages, marks the run incomplete and
    raises :class:`Interrupted`.
    """
    session = RunSession(plan=plan, label=label, target=target, profile=profile, script=script,
                         out_dir=Path(out_dir), env=env or {}, progress=progress or Progress(),
                         service_overrides=service_overrides or {}, keep_raw=keep_raw,
                         plan_mode=plan_mode, stages_given=stages_given,
                         override_script_options=override_script_options,
                         generators=generators, fault_specs=list(fault_specs or []),
                         raw_output=raw_output, **(server or {}))
    session.open()
    try:
        for repeat in range(1, plan.repeat + 1):
            session.run_repeat(repeat)
            # each repeat gets a fresh service process and database: a repeat is a replicate
            # of the whole measurement, process start included
            session.stop_service()
    except KeyboardInterrupt:
        run = session.close("incomplete", "interrupted (Ctrl-C)")
        raise Interrupted(run) from None
    except BaseException as exc:
        session.close("failed", f"{exc.__class__.__name__}: {exc}")
        raise
    return session.close()
