"""The conditions a stage was measured under: the CPU that k6, the target, loadproof itself and
everything else on the machine used while it ran, and the waits between arms (processes gone,
machine quiet) that keep one arm's leftovers out of the other's measurement."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

# other processes using a quarter of a core on average while a stage ran bend its figures
DISTURBED_CORES = 0.25
# between arms: quiet means the machine's busy CPU (ours excluded) under this many cores
QUIET_CORES = 0.25
QUIET_TIMEOUT_S = 15.0
GONE_TIMEOUT_S = 20.0
# the generator guard: the machine saturated (this share of all cores not free for k6:
# processes, interrupts, steal) in most (more than half) of the stage's samples, or k6 at this
# share of the cores it could use
SATURATED_SHARE = 0.90
SATURATED_SAMPLES = 0.5
# the sampler finds each watched tree's processes again every this many samples
REDISCOVER_EVERY = 5


def _busy_seconds(unavailable: bool = False) -> float:
    """CPU seconds the machine's cores spent running processes (guest time excluded: Linux
    already counts it in user time). ``unavailable``: every second a core was not free for
    k6, which adds the cores' hard and soft interrupt time (psutil's ``irq`` and ``softirq``;
    on loopback, the load's own packets) and, on a virtual machine, the time the hypervisor
    ran something else while this machine wanted to run (``steal``). That is the measure of
    "is the machine saturated"; without them, of "what did other processes use" (the load's
    own packets and the hypervisor's neighbours are not other processes here)."""
    processes, interrupts, steal = _busy_split()
    return processes + interrupts + steal if unavailable else processes


def _busy_split() -> tuple[float, float, float]:
    """(CPU seconds running processes, in interrupts, stolen), from one reading."""
    t = psutil.cpu_times()
    interrupts = float(getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))
    steal = float(getattr(t, "steal", 0.0))
    idle = t.idle + getattr(t, "iowait", 0.0)
    busy = float(sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0))
    return busy - interrupts - steal, interrupts, steal


def _tree(pids: Iterable[int]) -> list[psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                found[proc.pid] = proc
        except psutil.Error:
            continue
    return list(found.values())


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process. psutil's own map (what ``children()`` reads) is a
    third of the CPU of ``process_iter``; it is private, so process_iter stays the fallback."""
    ppid_map = getattr(psutil, "_ppid_map", None)
    if callable(ppid_map):
        try:
            return dict(ppid_map())
        except Exception:  # noqa: BLE001 - a private function: any failure means "use the API"
            pass
    return {proc.pid: proc.info["ppid"] for proc in psutil.process_iter(["ppid"])}


def _cpu_by_pid(procs: Iterable[psutil.Process]) -> dict[int, float]:
    out = {}
    for proc in procs:
        try:
            t = proc.cpu_times()
            out[proc.pid] = float(t.user + t.system)
        except psutil.Error:
            continue
    return out


@dataclass
class CpuWatch:
    """CPU used between ``start`` and ``stop`` by: loadproof's own process, the child processes
    it reaped meanwhile (k6: it exits before ``stop``, so its CPU is read from the runner's
    reaped-children times), and each named group of live process trees (the target). The rest
    of the machine's busy time is "other". A group given as None is unknown: its CPU is counted
    in other, and the stage cannot be called disturbed."""

    groups: dict[str, list[int] | None]
    reaped_name: str = "k6"
    sampler: ResourceSampler | None = None
    _t0: float = 0.0
    _busy0: float = 0.0
    _irq0: float = 0.0
    _steal0: float = 0.0
    _own0: tuple[float, float] = (0.0, 0.0)
    _cpu0: dict[str, dict[int, float]] = field(default_factory=dict)

    def start(self) -> CpuWatch:
        self._t0 = time.monotonic()
        self._busy0, self._irq0, self._steal0 = _busy_split()
        self._own0 = _own_split()
        self._cpu0 = {name: _cpu_by_pid(_tree(pids)) for name, pids in self.groups.items()
                      if pids is not None}
        known = {pid for pids in self.groups.values() for pid in pids or []}

        def generator() -> list[int]:  # loadproof's other children: k6, once it has started
            return [c.pid for c in psutil.Process().children() if c.pid not in known]

        timelines: dict[str, Callable[[], list[int]]] = {self.reaped_name: generator}
        for name, pids in self.groups.items():
            if pids:
                timelines[name] = lambda pids=pids: pids  # type: ignore[misc]
        self.sampler = ResourceSampler(timelines).start()
        return self

    def stop(self) -> dict[str, Any]:
        if self.sampler is not None:
            self.sampler.stop()
        elapsed = time.monotonic() - self._t0
        busy_now, irq_now, steal_now = _busy_split()
        busy, interrupts = busy_now - self._busy0, irq_now - self._irq0
        steal = steal_now - self._steal0
        own, reaped = (now - before for now, before in zip(_own_split(), self._own0, strict=True))
        seconds: dict[str, float | None] = {"loadproof": own, self.reaped_name: reaped}
        for name, pids in self.groups.items():
            if pids is None:
                seconds[name] = None
                continue
            before = self._cpu0.get(name, {})
            now = _cpu_by_pid(_tree(pids))
            seconds[name] = sum(max(cpu - before.get(pid, 0.0), 0.0) for pid, cpu in now.items())
        cores = {name: (value / elapsed if value is not None and elapsed > 0 else None)
                 for name, value in seconds.items()}
        known = sum(v for v in cores.values() if v is not None)
        processes = busy / elapsed if elapsed > 0 else 0.0
        interrupt_cores = interrupts / elapsed if elapsed > 0 else 0.0
        steal_cores = steal / elapsed if elapsed > 0 else 0.0
        other = max(processes - known, 0.0)
        unknown = [name for name, value in seconds.items() if value is None]
        return {
            "window_s": round(elapsed, 3),
            "cores": psutil.cpu_count() or os.cpu_count(),
            # the cores not free for k6: processes, interrupts (interrupt_cpu_cores) and the
            # hypervisor's steal (steal_cpu_cores); other processes' share is reckoned from
            # the processes' part alone
            "machine_cpu_cores": round(processes + interrupt_cores + steal_cores, 3),
            "interrupt_cpu_cores": round(interrupt_cores, 3),
            "steal_cpu_cores": round(steal_cores, 3),
            **{f"{name}_cpu_cores": (round(v, 3) if v is not None else None)
               for name, v in cores.items()},
            "other_cpu_cores": round(other, 3),
            "other_includes": unknown,
            "disturbed": not unknown and other >= DISTURBED_CORES,
            "threshold_cores": DISTURBED_CORES,
        }


def _own_split() -> tuple[float, float]:
    """(this process's own CPU seconds, its reaped children's CPU seconds)."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system), float(t.children_user + t.children_system)


def wait_gone(pids: Iterable[int], timeout_s: float = GONE_TIMEOUT_S) -> dict[str, Any]:
    """Wait (bounded) until every process in ``pids`` has exited; report what is left."""
    started = time.monotonic()
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    return {"waited_s": round(time.monotonic() - started, 3),
            "left_running": sorted(p.pid for p in alive)}


def wait_quiet(timeout_s: float = QUIET_TIMEOUT_S, threshold: float = QUIET_CORES) \
        -> dict[str, Any]:
    """Wait (bounded) until the machine, loadproof itself excluded, is nearly idle: a stopped
    arm's leftovers (a database flushing, workers draining) must not run into the next arm."""
    started = time.monotonic()
    while True:
        busy0, mine0, t0 = _busy_seconds(), sum(_own_split()), time.monotonic()
        time.sleep(1.0)
        elapsed = time.monotonic() - t0
        last = max(_busy_seconds() - busy0 - (sum(_own_split()) - mine0), 0.0) / elapsed
        waited = time.monotonic() - started
        if last < threshold or waited >= timeout_s:
            return {"waited_s": round(waited, 3), "machine_cpu_cores": round(last, 3),
                    "quiet": last < threshold, "threshold_cores": threshold}


def target_pids(pid: int) -> list[int]:
    """``--target-pid``: the process (and, through ``_tree``, its children) of a target
    loadproof did not start; a usage error when no such process runs."""
    from .errors import UsageError

    try:
        psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        raise UsageError(f"--target-pid {pid}: no such process") from None
    except psutil.AccessDenied:
        raise UsageError(f"--target-pid {pid}: not allowed to read its CPU times") from None
    return [pid]


def service_pids(service: Any) -> list[int]:
    """The reference service's process and its database's postmaster (found as the parent of
    the backend that answered the readiness check), when they run on this machine."""
    pids = [service.proc.pid] if getattr(service, "proc", None) is not None else []
    backend = getattr(service, "database_backend_pid", None)
    if backend:
        try:
            postmaster = psutil.Process(int(backend)).ppid()
            if postmaster > 1:
                pids.append(postmaster)
        except psutil.Error:
            pass
    return pids


class ResourceSampler:
    """Once a second, in a thread: the CPU (100 = one core) and RSS of each named process tree
    and of the whole machine. ``stop`` returns the rows for ``resources.parquet``."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]],
                 interval_s: float = 1.0) -> None:
        self.groups = groups
        self.interval_s = interval_s
        self.rows: list[tuple[datetime, str, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="loadproof-sampler", daemon=True)
        self._last: dict[int, float] = {}
        self._last_t = time.monotonic()
        self._last_busy = _busy_seconds(unavailable=True)
        self._procs: dict[str, list[psutil.Process]] = {}
        self._samples = 0

    def start(self) -> ResourceSampler:
        self._discover()
        for procs in self._procs.values():
            self._last.update(_cpu_by_pid(procs))
        self._thread.start()
        return self

    def _discover(self) -> None:
        """Each group's process trees, from one pass over the machine's processes. Finding
        children means reading every process's parent; doing it per group and per sample cost
        ~5 ms a tree on a machine of ~100 processes, so it is done every REDISCOVER_EVERY
        samples (a tree's new processes, e.g. a database backend, join by then)."""
        children: dict[int, list[int]] = {}
        for pid, ppid in _parents().items():
            children.setdefault(ppid, []).append(pid)
        known = {proc.pid: proc for procs in self._procs.values() for proc in procs}
        for name, roots in self.groups.items():
            pids: set[int] = set()
            stack = list(roots())
            while stack:
                pid = stack.pop()
                if pid not in pids:
                    pids.add(pid)
                    stack.extend(children.get(pid, []))
            procs = []
            for pid in sorted(pids):
                try:
                    procs.append(known.get(pid) or psutil.Process(pid))
                except psutil.Error:
                    continue
            self._procs[name] = procs

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        now, stamp = time.monotonic(), datetime.now(UTC)
        elapsed = max(now - self._last_t, 1e-6)
        busy = _busy_seconds(unavailable=True)  # the machine: every core not free for k6
        memory = psutil.virtual_memory()
        machine_rss = (memory.total - memory.available) / 2**20
        self.rows.append((stamp, "machine", 100 * (busy - self._last_busy) / elapsed, machine_rss))
        self._last_t, self._last_busy = now, busy
        self._samples += 1
        if self._samples == 1 or self._samples % REDISCOVER_EVERY == 0:
            self._discover()
        for name, procs in self._procs.items():
            cpu = rss = 0.0
            for proc in procs:
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        total = float(times.user + times.system)
                        rss += proc.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                cpu += max(total - self._last.get(proc.pid, total), 0.0)
                self._last[proc.pid] = total
            self.rows.append((stamp, name, 100 * cpu / elapsed, rss))

    def stop(self) -> list[tuple[datetime, str, float, float]]:
        self._stop.set()
        self._thread.join(5)
        return self.rows


def write_resources(rows: list[tuple[datetime, str, float, float]], path: Path) -> None:
    import polars as pl

    frame = pl.DataFrame(rows, schema={"timestamp": pl.Datetime("us", "UTC"),
                                       "process": pl.Categorical, "cpu_percent": pl.Float64,
                                       "rss_mb": pl.Float64}, orient="row")
    frame.write_parquet(path)


def resources_summary(rows: list[tuple[datetime, str, float, float]]) -> dict[str, Any]:
    """Per process: mean and peak CPU (100 = one core), peak RSS, and the number of samples."""
    by_process: dict[str, list[tuple[float, float]]] = {}
    for _, name, cpu, rss in rows:
        by_process.setdefault(name, []).append((cpu, rss))
    return {name: {"cpu_percent_mean": round(sum(c for c, _ in values) / len(values), 1),
                   "cpu_percent_max": round(max(c for c, _ in values), 1),
                   "rss_mb_max": round(max(r for _, r in values), 1),
                   "samples": len(values)}
            for name, values in by_process.items()}


_INSUFFICIENT_VUS = re.compile(r"Insufficient VUs", re.IGNORECASE)


def k6_usable_cores(cores: int) -> int:
    """The cores k6 may run on: the machine's, fewer when this process's CPU affinity (which k6
    inherits) or GOMAXPROCS (which k6's Go runtime obeys; k6 inherits the environment) says."""
    usable = cores
    with contextlib.suppress(AttributeError, OSError):
        usable = min(usable, len(os.sched_getaffinity(0)))
    with contextlib.suppress(ValueError):
        limit = int(os.environ.get("GOMAXPROCS", "0"))
        if limit > 0:
            usable = min(usable, limit)
    return max(usable, 1)


def planned_arrivals(record: dict[str, Any]) -> float | None:
    """The arrivals an open-model stage planned: loadproof's rate times its duration, or a
    script's own scenario's (``planned``): its constant rate, or the area under its ramping
    rate. None for a closed-model stage."""
    from .plan import parse_duration

    if record.get("model") != "rate" or not record.get("duration_s"):
        return None
    source = record.get("planned") or {}
    executor = source.get("executor")
    if executor is None:
        level = record.get("level")
        return float(level) * float(record["duration_s"]) if level else None
    unit = parse_duration(source.get("timeUnit") or "1s", what="timeUnit") or 1.0
    if executor == "constant-arrival-rate":
        return float(source.get("rate") or 0) / unit * float(record["duration_s"])
    if executor == "ramping-arrival-rate":
        total, rate = 0.0, float(source.get("startRate") or 0) / unit
        for step in source.get("stages") or []:
            target = float(step.get("target") or 0) / unit
            total += (rate + target) / 2 * parse_duration(step.get("duration") or 0)
            rate = target
        return total
    return None


def generator_guard(rows: list[tuple[datetime, str, float, float]], cpu: dict[str, Any],
                    record: dict[str, Any], k6_log: Path | None) -> dict[str, Any]:
    """Whether the load generator (or the machine), not the target, limited this stage."""
    cores = psutil.cpu_count() or os.cpu_count() or 1
    reasons = []
    machine = [c for _, name, c, _ in rows if name == "machine"]
    saturated = [c >= SATURATED_SHARE * 100 * cores for c in machine]
    k6_cores = cpu.get("k6_cpu_cores")
    if machine and sum(saturated) > SATURATED_SAMPLES * len(machine):
        reasons.append(f"machine CPU at ≥{SATURATED_SHARE:.0%} of its {cores} cores in "
                       f"{sum(saturated)} of {len(machine)} samples (mean "
                       f"{sum(machine) / len(machine) / cores:.0f}%"
                       + (f", k6 at {k6_cores:.2f} cores" if k6_cores is not None else "")
                       + (f", other processes {other:.2f} cores"
                          if (other := cpu.get("other_cpu_cores")) is not None else "")
                       + ")")
    usable = k6_usable_cores(cores)
    if k6_cores is not None and k6_cores >= SATURATED_SHARE * usable:
        reasons.append(f"k6 used {k6_cores:.2f} of the {usable} cores it could use")
    duration = record.get("duration_s")
    dropped, requests = record.get("dropped_iterations"), record.get("requests")
    planned = planned_arrivals(record)
    if planned and duration:
        if dropped and dropped > 0.01 * planned:
            reasons.append(f"{dropped} dropped iterations ({dropped / planned:.1%} of "
                           f"{planned:.0f} planned)")
        if requests is not None and requests < 0.95 * planned:
            reasons.append(f"achieved {requests / duration:.0f} req/s of "
                           f"{planned / duration:.0f} planned")
    if k6_log is not None and k6_log.is_file():
        try:
            if _INSUFFICIENT_VUS.search(k6_log.read_text(errors="replace")):
                reasons.append("k6 logged that it ran out of VUs (Insufficient VUs)")
        except OSError:
            pass
    summary = {"limited": bool(reasons), "reasons": reasons, "cores": cores,
               "k6_usable_cores": usable, "k6_cpu_cores": k6_cores,
               "other_cpu_cores": cpu.get("other_cpu_cores"),
               "machine_cpu_percent_mean": round(sum(machine) / len(machine), 1)
               if machine else None}
    return summary


def record_stage(watch: CpuWatch, record: dict[str, Any], stage_dir: Path) -> None:
    """Store a finished stage's resource timeline and put its summary and the generator guard
    in the stage record (after its requests and dropped iterations are known)."""
    rows = watch.sampler.rows if watch.sampler is not None else []
    if rows:
        write_resources(rows, stage_dir / "resources.parquet")
        record["resources_file"] = f"stages/{stage_dir.name}/resources.parquet"
        record["resources"] = resources_summary(rows)
    record["generator"] = generator_guard(rows, record.get("conditions") or {}, record,
                                          stage_dir / "k6.log")


def record_script(watch: CpuWatch, records: list[dict[str, Any]], stage_dir: Path) -> None:
    """A script-driven run (one k6 process for all its stages): its resource timeline is
    stored once, and each stage record gets the samples of its own window (from its load
    start over its measured time) as its summary and the generator guard's samples: k6's CPU
    too is the mean of the k6 samples in that window, not the whole test's, so a short
    saturated stage is not diluted by calm ones nor a calm stage flagged for a busy one. A
    stage whose window is unknown (no requests) or holds no sample is judged without CPU
    figures, and its record says so."""
    rows = watch.sampler.rows if watch.sampler is not None else []
    if rows:
        write_resources(rows, stage_dir / "resources.parquet")
    for record in records:
        mine = _rows_in(rows, record)
        if rows:
            record["resources_file"] = f"stages/{stage_dir.name}/resources.parquet"
        cpu = dict(record.get("conditions") or {})
        k6 = [c for _, name, c, _ in mine if name == "k6"]
        cpu["k6_cpu_cores"] = round(sum(k6) / len(k6) / 100, 3) if k6 else None
        if mine:
            record["resources"] = resources_summary(mine)
        record["generator"] = generator_guard(mine, cpu, record, stage_dir / "k6.log")
        if not mine:
            record["generator"]["cpu_note"] = ("no resource sample fell in this stage's "
                                               "window: CPU not judged")


def _rows_in(rows: list[tuple[datetime, str, float, float]],
             record: dict[str, Any]) -> list[tuple[datetime, str, float, float]]:
    start, measured = record.get("load_started_at"), record.get("measured_s")
    if not start or not measured:
        return []
    begin = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    end = begin.timestamp() + float(measured)
    # a sample covers the second before it: the first one after the start counts
    return [row for row in rows if begin.timestamp() < row[0].timestamp() <= end + 0.5]
