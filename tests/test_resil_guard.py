"""The generator guard's verdicts: what counts as a saturated machine (every core not free for
k6: processes, interrupts, the hypervisor's steal), "most of the stage" as more than half of
its samples, and a 300-user stage against a fast local target flagged with real k6."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from loadproof import conditions
from loadproof.execute import run_stages
from loadproof.plan import make_plan
from loadproof.progress import Progress

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def test_interrupts_and_steal_count_for_saturation_not_for_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Linux counts guest time inside user time: it is counted once (in user)
    times = Times(user=50.0, nice=1.0, system=20.0, idle=10.0, iowait=2.0, irq=3.0,
                  softirq=7.0, steal=5.0, guest=4.0, guest_nice=0.0)
    monkeypatch.setattr(psutil, "cpu_times", lambda: times)
    assert conditions._busy_split() == (71.0, 10.0, 5.0)
    assert conditions._busy_seconds() == 71.0
    assert conditions._busy_seconds(unavailable=True) == 86.0


def _rows(machine_percent: list[float]) -> list[tuple[datetime, str, float, float]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [(start + timedelta(seconds=i), "machine", cpu, 1000.0)
            for i, cpu in enumerate(machine_percent)]


def test_most_of_the_stage_means_more_than_half_of_its_samples() -> None:
    cores = psutil.cpu_count() or 1
    full, calm = 100.0 * cores, 10.0 * cores
    record = {"model": "vus", "level": 10, "duration_s": 4.0}
    half = conditions.generator_guard(_rows([full, full, calm, calm]), {}, record, None)
    assert half["limited"] is False, half
    most = conditions.generator_guard(_rows([full, full, full, calm, calm]),
                                      {"k6_cpu_cores": 0.5}, record, None)
    assert most["limited"] is True
    assert most["reasons"] == [f"machine CPU at ≥90% of its {cores} cores in 3 of 5 samples "
                               "(mean 64%, k6 at 0.50 cores)"]


def test_k6_at_the_cores_it_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOMAXPROCS", "1")
    record = {"model": "vus", "level": 10, "duration_s": 4.0}
    at_its_core = conditions.generator_guard([], {"k6_cpu_cores": 0.93}, record, None)
    assert at_its_core["k6_usable_cores"] == 1
    assert at_its_core["reasons"] == ["k6 used 0.93 of the 1 cores it could use"]
    below = conditions.generator_guard([], {"k6_cpu_cores": 0.85}, record, None)
    assert below["limited"] is False


@pytest.mark.slow
def test_300_users_against_a_fast_target_is_flagged(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # a target that costs next to nothing per request (tests/fast_server.py): 300 users
    # without think time keep k6 busy by construction. On a 2-core machine k6 and the target
    # share both cores and saturate them (interrupts count: a core handling the loopback
    # packets is not free for k6); on a larger machine k6 is given one core (GOMAXPROCS,
    # which it inherits and the guard reads) so that k6, not the one-process target, is the
    # limit there too. No other process is started to help.
    cores = psutil.cpu_count() or os.cpu_count() or 1
    if cores > 2:
        monkeypatch.setenv("GOMAXPROCS", "1")
    else:
        monkeypatch.delenv("GOMAXPROCS", raising=False)
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "fast_server.py")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        run = run_stages(make_plan("300", stage_duration="4s"), label="fast", target=url,
                         script="quick", out_dir=tmp_path, progress=Progress(quiet=True),
                         server={"target_pid": proc.pid})
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    (record,) = run.stages
    guard, cpu = record["generator"], record["conditions"]
    assert guard["limited"] is True, (guard, cpu)
    # each reason given agrees with the measured figures
    for reason in guard["reasons"]:
        if reason.startswith("k6 used"):
            assert cpu["k6_cpu_cores"] >= 0.9 * guard["k6_usable_cores"], (guard, cpu)
        else:
            assert reason.startswith("machine CPU"), guard
            assert guard["machine_cpu_percent_mean"] >= 45 * cores, guard
    # the one-process target was not what saturated: k6 used more than it
    assert cpu["k6_cpu_cores"] > cpu["target_cpu_cores"], cpu


def test_planned_arrivals_of_loadproof_and_script_stages() -> None:
    assert conditions.planned_arrivals({"model": "rate", "level": 50, "duration_s": 4.0}) == 200
    assert conditions.planned_arrivals({"model": "vus", "level": 50, "duration_s": 4.0}) is None
    constant = {"model": "rate", "level": 1, "duration_s": 10.0,
                "planned": {"executor": "constant-arrival-rate", "rate": 30, "timeUnit": "1m"}}
    assert conditions.planned_arrivals(constant) == 5.0  # 0.5/s for 10 s (level rounds to 1)
    ramp = {"model": "rate", "level": 20, "duration_s": 4.0,
            "planned": {"executor": "ramping-arrival-rate", "startRate": 0, "timeUnit": "1s",
                        "stages": [{"duration": "2s", "target": 20},
                                   {"duration": "2s", "target": 20}]}}
    assert conditions.planned_arrivals(ramp) == 60.0  # 20 while ramping up, 40 at 20/s
    # a script's ramp that got all its arrivals is not "under 95% of the planned rate"
    guard = conditions.generator_guard([], {}, {**ramp, "requests": 60,
                                                "dropped_iterations": 0}, None)
    assert guard["limited"] is False, guard
    short = conditions.generator_guard([], {}, {**ramp, "requests": 50}, None)
    assert short["reasons"] == ["achieved 12 req/s of 15 planned"]
