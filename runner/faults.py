"""Fault injection during a stage: a fault starts ``at`` seconds into the stage's measured
window and ends ``duration`` later, by shell commands (any arm) or a built-in action on the
embedded PostgreSQL of a reference service loadproof started (``db-outage``: immediate
shutdown, then start again; ``db-freeze``: SIGSTOP its processes, then SIGCONT).

A fault runs in a thread beside k6. Its stop runs whenever its start was attempted — on the
normal path, when the start failed, when k6 ended early, on an error in loadproof and on
Ctrl-C — and a frozen database is resumed even if the interpreter exits unexpectedly."""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .outcome import scenarios_started_at
from .plan import Stage, StagePlan, parse_duration
from .store import iso, utcnow

BUILT_IN_ACTIONS = ("db-outage", "db-freeze")
FAULT_KEYS = ("name", "stage", "at", "duration", "action", "start", "stop", "timeout")
DEFAULT_TIMEOUT_S = 30.0
PG_CTL_TIMEOUT_S = 90.0
MARK_WAIT_S = 60.0  # how long to wait for k6's test-start mark before giving up on the fault
_SPLIT = re.compile(r",\s*(?=(?:" + "|".join(FAULT_KEYS) + r")\s*=)")


@dataclass(frozen=True)
class FaultSpec:
    """One fault of an experiment: where (stage), when (``at_s`` after the stage's measured
    window starts), how long, and what (a built-in ``action`` or ``start``/``stop`` commands)."""

    name: str
    stage: int | str  # 1-based index or a stage key (s2-50vus)
    at_s: float
    duration_s: float
    action: str | None = None
    start: str | None = None
    stop: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def matches(self, stage: Stage) -> bool:
        return stage.index == self.stage if isinstance(self.stage, int) \
            else stage.key == self.stage

    @property
    def built_in(self) -> bool:
        return self.action is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_fault(data: Mapping[str, Any], where: str = "fault") -> FaultSpec:
    """A fault from an experiment's mapping or a parsed ``--fault`` string; a mistake is a
    UsageError naming ``where`` and the key."""
    unknown = sorted(set(data) - set(FAULT_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(FAULT_KEYS)}")
    for key in ("stage", "at", "duration"):
        if key not in data or data[key] in (None, ""):
            raise UsageError(f"{where}: {key} is missing (e.g. stage=2, at=5s, duration=8s)")
    stage_value = data["stage"]
    stage: int | str
    if isinstance(stage_value, bool):
        raise UsageError(f"{where}.stage: expected a stage number or key, got {stage_value!r}")
    if isinstance(stage_value, int) or str(stage_value).strip().isdigit():
        stage = int(stage_value)
        if stage < 1:
            raise UsageError(f"{where}.stage: stage numbers start at 1, got {stage}")
    else:
        stage = str(stage_value).strip()
    at_s = parse_duration(data["at"], what=f"{where}.at")
    duration_s = parse_duration(data["duration"], what=f"{where}.duration")
    if duration_s <= 0:
        raise UsageError(f"{where}.duration: must be longer than 0 s")
    action = data.get("action")
    start, stop = data.get("start"), data.get("stop")
    if action is not None:
        if action not in BUILT_IN_ACTIONS:
            raise UsageError(f"{where}.action: {action!r} is not a built-in action; use "
                             f"{' or '.join(BUILT_IN_ACTIONS)}, or start/stop commands")
        if start is not None or stop is not None:
            raise UsageError(f"{where}: give either action or start/stop commands, not both")
    elif not (isinstance(start, str) and start.strip() and isinstance(stop, str)
              and stop.strip()):
        raise UsageError(f"{where}: give action ({' or '.join(BUILT_IN_ACTIONS)}) or both a "
                         "start and a stop command")
    timeout_s = parse_duration(data.get("timeout", DEFAULT_TIMEOUT_S), what=f"{where}.timeout")
    if timeout_s <= 0:
        raise UsageError(f"{where}.timeout: must be longer than 0 s")
    name = str(data.get("name") or action or f"fault-stage-{stage}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise UsageError(f"{where}.name: {name!r}: use letters, digits, '.', '_' and '-' only "
                         "(it names the fault's files)")
    return FaultSpec(name=name, stage=stage, at_s=at_s, duration_s=duration_s,
                     action=str(action) if action is not None else None,
                     start=start, stop=stop, timeout_s=timeout_s)


def parse_fault_arg(text: str) -> FaultSpec:
    """``--fault name=x,stage=2,at=5s,duration=8s,action=db-outage``. A comma inside a
    command is kept: values are split only before a known ``key=``."""
    data: dict[str, str] = {}
    for part in _SPLIT.split(text.strip()):
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"--fault {text!r}: expected key=value pairs separated by commas "
                             f"(keys: {', '.join(FAULT_KEYS)})")
        key = key.strip()
        stray = re.search(r",\s*([A-Za-z_][\w-]*)\s*=", value)
        if stray and key not in ("start", "stop"):
            raise UsageError(f"--fault {text!r}: unknown key {stray.group(1)!r}; allowed: "
                             f"{', '.join(FAULT_KEYS)}")
        data[key] = value.strip()
    return parse_fault(data, where=f"--fault {text!r}")


def check_faults(faults: Sequence[FaultSpec], plan: StagePlan, *, has_service: bool,
                 script_driven: bool, where: str = "--fault") -> None:
    """Refuse, before any load, faults the plan or the arm cannot take."""
    seen: dict[str, str] = {}
    for fault in faults:
        name = f"{where} {fault.name}"
        if script_driven:
            raise UsageError(f"{name}: faults need loadproof's stages (--plan stages); a "
                             "script-driven run has no per-stage window to place them in")
        stages = [s for s in plan.stages if fault.matches(s)]
        if not stages:
            raise UsageError(f"{name}: stage {fault.stage!r} is not in the plan (stages: "
                             + ", ".join(f"{s.index} = {s.key}" for s in plan.stages) + ")")
        stage = stages[0]
        if stage.key in seen:
            raise UsageError(f"{name}: stage {stage.key} already has fault {seen[stage.key]}; "
                             "one fault per stage")
        seen[stage.key] = fault.name
        if fault.at_s + fault.duration_s >= stage.duration_s:
            raise UsageError(f"{name}: at {fault.at_s:g}s + duration {fault.duration_s:g}s does "
                             f"not end inside {stage.key}'s {stage.duration_s:g}s measured "
                             "window; leave time after it to measure the recovery")
        if fault.built_in and not has_service:
            raise UsageError(f"{name}: action {fault.action} works on the reference service "
                             "loadproof starts (--profile); for --target arms give start/stop "
                             "commands")


# --- the processes of an embedded PostgreSQL ----------------------------------------------

def _postmaster(service: Any) -> Any:
    import psutil

    backend = getattr(service, "database_backend_pid", None)
    if not backend:
        raise FaultError("the reference service reported no database backend, so its "
                         "PostgreSQL cannot be found")
    try:
        return psutil.Process(psutil.Process(int(backend)).ppid())
    except psutil.Error as exc:
        raise FaultError(f"the reference service's PostgreSQL is not running ({exc})") from exc


def _data_dir(postmaster: Any) -> Path:
    args = postmaster.cmdline()
    for i, arg in enumerate(args):
        if arg == "-D" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("-D") and len(arg) > 2:
            return Path(arg[2:])
    return Path(postmaster.cwd())


_DATA_DIRS: weakref.WeakKeyDictionary[Any, Path] = weakref.WeakKeyDictionary()


class FaultError(RuntimeError):
    """A built-in action could not be carried out; the message says why."""


class EmbeddedDatabase:
    """The embedded PostgreSQL of a reference service loadproof started, found from the
    backend that answered its readiness check."""

    def __init__(self, service: Any) -> None:
        self.service = service
        # found once per service: after a db-outage the backend it reported is long gone,
        # but the server runs again on the same data folder
        found = _DATA_DIRS.get(service)
        if found is None:
            found = _DATA_DIRS[service] = _data_dir(_postmaster(service))
        self.data_dir = found
        self._frozen: list[int] = []
        self.pids_started: list[int] = []  # postmasters this object started (db-outage)

    def _pg_ctl(self, args: list[str]) -> str:
        import warnings

        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver

        owner = self.data_dir.stat().st_uid
        import pwd

        user = pwd.getpwuid(owner).pw_name
        # in a session of its own, like k6: a Ctrl-C on the terminal must not kill pg_ctl
        # halfway through starting the database again
        out: str = pgserver.pg_ctl(args, pgdata=self.data_dir,  # type: ignore[attr-defined]
                                   user=user, timeout=PG_CTL_TIMEOUT_S, start_new_session=True)
        return out

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            return int(first)
        except (OSError, ValueError, IndexError):
            return None

    def outage_start(self) -> str:
        return self._pg_ctl(["-w", "-m", "immediate", "stop"])

    def outage_stop(self) -> str:
        # restart of a stopped server starts it with the options it last ran with
        # (postmaster.opts): the same socket folder and settings pgserver gave it
        out = self._pg_ctl(["-w", "-t", "60", "restart"])
        pid = self.postmaster_pid()
        if pid is not None:
            self.pids_started.append(pid)
        return out

    def freeze_start(self) -> str:
        import psutil

        postmaster = psutil.Process(self.postmaster_pid() or _postmaster(self.service).pid)
        procs = [postmaster, *postmaster.children(recursive=True)]
        _FROZEN.register(self)
        for proc in procs:  # the postmaster first, so it starts no new backend meanwhile
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGSTOP)
                self._frozen.append(proc.pid)
        return f"SIGSTOP sent to {len(self._frozen)} PostgreSQL processes: {self._frozen}"

    def freeze_stop(self) -> str:
        import psutil

        resumed = 0
        pids = list(self._frozen)
        with contextlib.suppress(psutil.Error):
            root = self.postmaster_pid()
            if root is not None:
                proc = psutil.Process(root)
                pids += [proc.pid, *(p.pid for p in proc.children(recursive=True))]
        for pid in dict.fromkeys(pids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)
                resumed += 1
        self._frozen.clear()
        _FROZEN.unregister(self)
        return f"SIGCONT sent to {resumed} PostgreSQL processes"


class _FrozenRegistry:
    """Databases frozen right now; resumed at interpreter exit if anything skipped the stop."""

    def __init__(self) -> None:
        self._items: set[int] = set()
        self._objects: dict[int, EmbeddedDatabase] = {}
        self._lock = threading.Lock()
        atexit.register(self.resume_all)

    def register(self, db: EmbeddedDatabase) -> None:
        with self._lock:
            self._objects[id(db)] = db

    def unregister(self, db: EmbeddedDatabase) -> None:
        with self._lock:
            self._objects.pop(id(db), None)

    def resume_all(self) -> None:
        with self._lock:
            objects = list(self._objects.values())
        for db in objects:
            with contextlib.suppress(Exception):
                db.freeze_stop()


_FROZEN = _FrozenRegistry()


# --- one fault during one stage -------------------------------------------------------------

@dataclass
class StepResult:
    """What one step (start or stop) did."""

    what: str  # the command, or the built-in action and step
    started_at: str
    completed_at: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    output_file: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0 and not self.timed_out


class FaultRun:
    """One fault during one stage and repeat. ``begin`` starts its thread (which waits for
    k6's test-start mark, then the stage's warm-up and ``at``); ``finish`` ends it — running
    its stop if its start was attempted and the stop has not run — and returns the record
    kept in the stage record as ``fault``."""

    def __init__(self, spec: FaultSpec, *, stage: Stage, repeat: int, stage_dir: Path,
                 run_dir: Path, env: Mapping[str, str],
                 database: Callable[[], EmbeddedDatabase] | None = None) -> None:
        self.spec = spec
        self.stage = stage
        self.repeat = repeat
        self.stage_dir = stage_dir
        self.run_dir = run_dir
        self.env = dict(env)
        self._database = database
        self._db: EmbeddedDatabase | None = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=f"loadproof-fault-{spec.name}",
                                        daemon=True)
        self.start_result: StepResult | None = None
        self.stop_result: StepResult | None = None
        self.failure: str | None = None  # why the stage must be aborted
        self.note: str | None = None
        self.origin_at: str | None = None  # the stage's test start, from k6's mark
        self._attempted = False

    def begin(self) -> FaultRun:
        self._thread.start()
        return self

    # the thread: wait, start, hold, stop
    def _main(self) -> None:
        try:
            origin = self._wait_origin()
            if origin is None:
                return
            begin_at = origin + self.stage.warmup_s + self.spec.at_s
            if self._cancel.wait(max(0.0, begin_at - time.time())):
                self.note = "not injected: the stage ended before the fault's time"
                return
            with self._lock:
                if self._cancel.is_set():
                    self.note = "not injected: the stage ended before the fault's time"
                    return
                self._attempted = True
                self.start_result = self._step("start")
            if not self.start_result.ok:
                self.failure = (f"fault {self.spec.name}: its start failed ("
                                + _describe(self.start_result) + "); the stage was aborted")
                return
            self._cancel.wait(self.spec.duration_s)
        except Exception as exc:  # never let the thread die silently with a fault active
            self.failure = f"fault {self.spec.name}: {exc.__class__.__name__}: {exc}"
        finally:
            self._run_stop()

    def _wait_origin(self) -> float | None:
        deadline = time.monotonic() + MARK_WAIT_S
        while not self._cancel.is_set():
            # k6's log, or each shard's (--generators: stages/<stage>/<shards>/<i>/k6.log); the
            # earliest mark is the stage's start
            marks = []
            for log in [self.stage_dir / "k6.log", *self.stage_dir.glob("*/*/k6.log")]:
                with contextlib.suppress(OSError):
                    started = scenarios_started_at(log.read_text(errors="replace"))
                    if started is not None:
                        marks.append(started)
            if marks:
                self.origin_at = iso(min(marks))
                return min(marks).timestamp()
            if time.monotonic() > deadline:
                self.failure = (f"fault {self.spec.name}: k6 printed no test-start mark within "
                                f"{MARK_WAIT_S:.0f} s, so the fault could not be placed")
                return None
            self._cancel.wait(0.05)
        self.note = "not injected: the stage ended before k6 started its scenarios"
        return None

    def _run_stop(self) -> None:
        with self._lock:
            if self._attempted and self.stop_result is None:
                self.stop_result = self._step("stop")

    def _step(self, which: str) -> StepResult:
        if self.spec.built_in:
            return self._built_in(which)
        command = self.spec.start if which == "start" else self.spec.stop
        assert command is not None
        return run_command(command, env=self.env, timeout_s=self.spec.timeout_s,
                           log_path=self.stage_dir / f"fault-{self.spec.name}-{which}.log",
                           run_dir=self.run_dir)

    def _built_in(self, which: str) -> StepResult:
        action = self.spec.action
        result = StepResult(what=f"{action} {which}", started_at=iso(utcnow()))
        log_path = self.stage_dir / f"fault-{self.spec.name}-{which}.log"
        output = ""
        try:
            if self._db is None:
                if self._database is None:
                    raise FaultError("no reference service started by loadproof in this arm")
                self._db = self._database()
            steps = {("db-outage", "start"): self._db.outage_start,
                     ("db-outage", "stop"): self._db.outage_stop,
                     ("db-freeze", "start"): self._db.freeze_start,
                     ("db-freeze", "stop"): self._db.freeze_stop}
            output = steps[(str(action), which)]() or ""
            result.exit_code = 0
        except Exception as exc:
            result.error = f"{exc.__class__.__name__}: {exc}".strip()
            output += f"\n{result.error}"
        result.completed_at = iso(utcnow())
        log_path.write_text(output)
        result.output_file = str(log_path.relative_to(self.run_dir))
        return result

    def stop_reason(self) -> str | None:
        """For k6's ``stop_when``: the reason to end the stage now (the fault's start
        failed)."""
        return self.failure if self.start_result is not None and not self.start_result.ok \
            else None

    def finish(self) -> dict[str, Any]:
        """End the fault (its stop runs if its start was attempted) and return its record.
        A Ctrl-C while waiting is held until the stop has run, then raised."""
        self._cancel.set()
        interrupted = False
        while self._thread.is_alive():
            try:
                self._thread.join(0.2)
            except KeyboardInterrupt:
                interrupted = True
        self._run_stop()  # a no-op unless the thread never reached its finally
        if interrupted:
            raise KeyboardInterrupt
        return self.record()

    @property
    def pids_started(self) -> list[int]:
        return list(self._db.pids_started) if self._db is not None else []

    def record(self) -> dict[str, Any]:
        start, stop = self.start_result, self.stop_result
        injected = bool(start and start.ok and stop and stop.ok)
        record: dict[str, Any] = {
            "name": self.spec.name,
            "action": self.spec.action,
            "spec": self.spec.to_dict(),
            "origin_at": self.origin_at,
            "injected": injected,
            # the window the figures use: when the start and the stop completed
            "started_at": start.completed_at if start and start.ok else None,
            "stopped_at": stop.completed_at if stop else None,
            "start": asdict(start) if start else None,
            "stop": asdict(stop) if stop else None,
            "error": self.failure or (f"fault {self.spec.name}: its stop failed ("
                                      + _describe(stop) + ")" if stop and not stop.ok
                                      else None),
            "note": self.note,
        }
        return record


def _describe(result: StepResult | None) -> str:
    if result is None:
        return "not run"
    if result.error:
        return result.error
    if result.timed_out:
        return "timed out"
    shown = f"exit {result.exit_code}"
    return shown + (f"; output in {result.output_file}" if result.output_file else "")


def run_command(command: str, *, env: Mapping[str, str], timeout_s: float, log_path: Path,
                run_dir: Path) -> StepResult:
    """Run a shell command in a process group of its own, its output to ``log_path``; past
    ``timeout_s`` the whole group is killed. Never raises for the command's own failure."""
    result = StepResult(what=command, started_at=iso(utcnow()))
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(command, shell=True, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env={**os.environ, **env},
                                    start_new_session=True)
        except OSError as exc:
            result.error = f"could not run the command: {exc}"
            result.completed_at = iso(utcnow())
            return result
        try:
            result.exit_code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            result.timed_out = True
            result.error = f"timed out after {timeout_s:g} s (killed)"
        finally:
            if proc.poll() is None or result.timed_out:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                result.exit_code = proc.returncode if result.exit_code is None \
                    else result.exit_code
    result.completed_at = iso(utcnow())
    result.output_file = str(log_path.relative_to(run_dir)) if log_path.is_relative_to(run_dir) \
        else str(log_path)
    if result.exit_code not in (0, None) and result.error is None:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        result.error = f"exit {result.exit_code}" + (f": {tail[0][:200]}" if tail[0] else "")
    return result


def fault_for(faults: Sequence[FaultSpec], stage: Stage) -> FaultSpec | None:
    return next((f for f in faults if f.matches(stage)), None)


def apply_to_record(record: dict[str, Any], fault: dict[str, Any]) -> None:
    """Keep the fault in the stage record; a failed start fails the stage, with its reason."""
    record["fault"] = fault
    if fault.get("error"):
        record["status"] = "failed"
        record["status_reason"] = fault["error"]


def combine_stop_when(fault: FaultRun | None, other: Callable[[float], str | None] | None) \
        -> Callable[[float], str | None] | None:
    if fault is None:
        return other

    def stop_when(elapsed: float) -> str | None:
        return fault.stop_reason() or (other(elapsed) if other is not None else None)

    return stop_when


def describe(fault: dict[str, Any]) -> str:
    """One line on what a fault did, for the progress output."""
    if fault.get("error"):
        return f"error: {fault['error']}"
    if not fault.get("injected"):
        return f"fault {fault['name']} {fault.get('note') or 'not injected'}"
    begin = dt.datetime.fromisoformat(fault["started_at"])
    end = dt.datetime.fromisoformat(fault["stopped_at"])
    return (f"fault {fault['name']}: active {(end - begin).total_seconds():.1f} s "
            f"({fault['started_at']} to {fault['stopped_at']})")
