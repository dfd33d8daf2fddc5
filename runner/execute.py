"""Running a stage plan: preflight, the reference service when asked, k6 per stage, and the
stage's files saved as soon as it ends (a crash later never loses a finished stage)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from . import conditions
from .errors import LoadproofError, ServiceError, TargetError, UsageError
from .ingest import count_dropped_iterations, csv_to_parquet, summary_values
from .k6bin import GO_GC_KEYS, find_k6, k6_gc_defaults, k6_version
from .plan import Stage, StagePlan, format_duration
from .progress import CsvTail, Progress
from .scripts import is_shipped, lib_sha256, resolve_script, sha256_file
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
class RunSession:
    """One run being written. ``open`` it, run repeats (the pipeline interleaves arms this
    way), then ``close``; ``run_stages`` does all three."""

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
    run: Run | None = None
    _service: Any = None
    # the target's processes (service and database) when loadproof started it; None: unknown
    _target_pids: list[int] | None = None

    def open(self) -> Run:
        if (self.target is None) == (self.profile is None):
            raise UsageError("give exactly one of --target URL or --profile NAME")
        script_path = resolve_script(self.script)
        if not is_shipped(script_path) and self.plan.model == "rate":
            self.progress.line("note: with --model rate, your script must build its scenario "
                               "from LP_MODEL/LP_LEVEL/LP_DURATION (see runner/k6/lib)")
        k6 = find_k6()
        version = k6_version(k6)
        self._k6_env = {**k6_gc_defaults(), **os.environ, **self.env}
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
            "script": {"path": str(script_path), "name": script_path.stem,
                       "sha256": sha256_file(script_path), "shipped": is_shipped(script_path),
                       "lib_sha256": lib_sha256() if is_shipped(script_path) else None},
            "k6": {"binary": str(k6), "version": version,
                   "go_env": {key: self._k6_env[key] for key in GO_GC_KEYS}},
            "commit_info": git_commit(),
            "machine_info": machine_info(),
            "started_at": iso(utcnow()),
            "ended_at": None,
            "stages": [],
        }
        self.run = Run(path, manifest)
        self.run.save()
        self._k6 = k6
        self._script_path = script_path
        return self.run

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

    def stop_service(self) -> dict[str, Any] | None:
        """Stop the reference service and wait until it and its database have exited (the
        next repeat, or the other arm, starts on a machine without them)."""
        if self._service is None:
            return None
        pids, self._target_pids = self._target_pids or [], None
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
        for stage in self.plan.stages:
            self._run_stage(stage, repeat)

    def _run_stage(self, stage: Stage, repeat: int) -> None:
        assert self.run is not None and self.target is not None
        run = self.run
        stage_dir_name = f"r{repeat}-{stage.key}"
        stage_dir = run.path / "stages" / stage_dir_name
        stage_dir.mkdir(parents=True, exist_ok=False)
        # absolute: k6 runs inside the stage folder, so that files a script's handleSummary
        # writes to relative paths land beside the stage's data, not in the caller's folder
        stage_dir = stage_dir.resolve()
        raw_csv = stage_dir / "raw.csv"
        summary_tmp = stage_dir / ".summary.json.tmp"
        record: dict[str, Any] = {
            "dir": stage_dir_name, "key": stage.key, "index": stage.index, "repeat": repeat,
            "level": stage.level, "model": stage.model, "duration_s": stage.duration_s,
            "warmup_s": stage.warmup_s, "status": "running", "started_at": iso(utcnow()),
        }
        run.manifest["stages"].append(record)
        run.save()
        cmd = [str(Path(self._k6).resolve()), "run", "--no-color", "--quiet", "--out",
               f"csv={raw_csv}"]
        if not is_shipped(self._script_path):
            # shipped scripts tag the stage themselves (and keep k6's tag set small)
            cmd += ["--tag", f"stage={stage.key}", "--tag", f"repeat={repeat}"]
            # user scripts: the summary in the legacy export format, and the closed model
            # through k6's own flags (which override the script's options)
            cmd += ["--summary-export", str(summary_tmp)]
            if stage.model == "vus":
                cmd += ["--vus", str(stage.level),
                        "--duration", format_duration(stage.duration_s + stage.warmup_s)]
        cmd.append(str(Path(self._script_path).resolve()))
        env = {**self._k6_env, **stage_env(stage, repeat, self.target, summary_tmp)}
        title = f"[{run.label}] repeat {repeat}/{self.plan.repeat} {stage.label}"
        self.progress.line(f"{title}: running for {format_duration(stage.duration_s)}"
                           + (f" after {format_duration(stage.warmup_s)} warm-up"
                              if stage.warmup_s else ""))
        interrupted = False
        tail = CsvTail(str(raw_csv))
        window: list[tuple[float, int]] = []
        limit_s = stage.duration_s + stage.warmup_s + 120  # bounded even if k6 hangs
        proc: subprocess.Popen[bytes] | None = None
        with open(stage_dir / "k6.log", "w") as log:
            try:
                # inside the try: a Ctrl-C just after k6 starts still stops it (k6 runs in a
                # session of its own, so the terminal's SIGINT does not reach it)
                # the target's CPU is known when loadproof started it; k6's is read when reaped
                watch = conditions.CpuWatch({"target": self._target_pids}).start()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        cwd=stage_dir,
                                        start_new_session=True)
                started = time.monotonic()
                while proc.poll() is None:
                    time.sleep(1.0)
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
                        proc.send_signal(signal.SIGINT)
                        proc.wait(30)
            except KeyboardInterrupt:
                if proc is None:  # k6 never started; the run's close marks this stage
                    raise
                interrupted = True
                proc.send_signal(signal.SIGINT)  # k6 stops gracefully and writes its summary
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.progress.done()
        code = proc.returncode
        record["ended_at"] = iso(utcnow())
        record["conditions"] = watch.stop()
        record["k6_exit_code"] = code
        record["k6_exit_meaning"] = K6_EXIT_CODES.get(code, "unknown k6 exit code")
        if code == 99:
            record["thresholds"] = "crossed"
        elif code == 0:
            record["thresholds"] = "passed"
        if code != 0 and code != 99:
            record["k6_message"] = _tail(stage_dir / "k6.log")
        try:
            self._save_stage_files(record, stage_dir, raw_csv, summary_tmp, stage, repeat)
            conditions.record_stage(watch, record, stage_dir)
        except Exception as exc:  # a broken stage must not lose the finished ones
            record["status"] = "failed"
            record["status_reason"] = f"could not save stage data: {exc}"
            run.save()
            raise
        if interrupted:
            record["status"] = "incomplete"
            record["status_reason"] = "interrupted (Ctrl-C); partial data kept"
        elif code in (0, 99):
            record["status"] = "complete"
        else:
            record["status"] = "failed"
            record["status_reason"] = f"k6 exited {code}: {record['k6_exit_meaning']}"
        run.save()
        summary = (f"{title}: {record['status']}, {record.get('requests', 0)} requests"
                   + (f", k6 exit {code} ({record['k6_exit_meaning']})" if code else ""))
        self.progress.line(summary)
        if interrupted:
            raise KeyboardInterrupt

    def _save_stage_files(self, record: dict[str, Any], stage_dir: Path, raw_csv: Path,
                          summary_tmp: Path, stage: Stage, repeat: int) -> None:
        assert self.run is not None
        base = f"stages/{stage_dir.name}"
        if summary_tmp.is_file():
            os.replace(summary_tmp, stage_dir / "summary.json")
            record["summary_file"] = f"{base}/summary.json"
            summary = read_json(stage_dir / "summary.json", what="k6 summary")
            record["dropped_iterations"] = _summary_count(
                summary, "dropped_iterations{scenario:main}", "dropped_iterations")
        if raw_csv.is_file() and raw_csv.stat().st_size > 0:
            rows = csv_to_parquet(raw_csv, stage_dir / "requests.parquet", stage=stage.key,
                                  repeat=repeat)
            record["requests_file"] = f"{base}/requests.parquet"
            record["requests"] = rows
            if record.get("dropped_iterations") is None:
                record["dropped_iterations"] = count_dropped_iterations(raw_csv)
            if self.keep_raw:
                record["raw_file"] = f"{base}/raw.csv"
            else:
                raw_csv.unlink()

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
               service_overrides: dict[str, Any] | None = None, keep_raw: bool = False) -> Run:
    """Run ``plan`` against a target URL or a reference-service profile; return the stored Run.

    Ctrl-C stops k6 gracefully, keeps the finished stages, marks the run incomplete and
    raises :class:`Interrupted`.
    """
    session = RunSession(plan=plan, label=label, target=target, profile=profile, script=script,
                         out_dir=Path(out_dir), env=env or {}, progress=progress or Progress(),
                         service_overrides=service_overrides or {}, keep_raw=keep_raw)
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
