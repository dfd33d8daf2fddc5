"""The conditions a stage was measured under: the CPU that k6, the target, loadproof itself and
everything else on the machine used while it ran, and the waits between arms (processes gone,
machine quiet) that keep one arm's leftovers out of the other's measurement."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

# other processes using a quarter of a core on average while a stage ran bend its figures
DISTURBED_CORES = 0.25
# between arms: quiet means the machine's busy CPU (ours excluded) under this many cores
QUIET_CORES = 0.25
QUIET_TIMEOUT_S = 15.0
GONE_TIMEOUT_S = 20.0


def _busy_seconds() -> float:
    """CPU seconds the machine's cores spent busy (steal excluded: that is the hypervisor's)."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0) + getattr(t, "steal", 0.0)
    return float(sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0))


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
    _t0: float = 0.0
    _busy0: float = 0.0
    _own0: tuple[float, float] = (0.0, 0.0)
    _cpu0: dict[str, dict[int, float]] = field(default_factory=dict)

    def start(self) -> CpuWatch:
        self._t0 = time.monotonic()
        self._busy0 = _busy_seconds()
        self._own0 = _own_split()
        self._cpu0 = {name: _cpu_by_pid(_tree(pids)) for name, pids in self.groups.items()
                      if pids is not None}
        return self

    def stop(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._t0
        busy = _busy_seconds() - self._busy0
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
        machine = busy / elapsed if elapsed > 0 else 0.0
        other = max(machine - known, 0.0)
        unknown = [name for name, value in seconds.items() if value is None]
        return {
            "window_s": round(elapsed, 3),
            "cores": psutil.cpu_count() or os.cpu_count(),
            "machine_cpu_cores": round(machine, 3),
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
