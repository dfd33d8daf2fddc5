"""The measurement's conditions with real k6 on loopback: the resource timeline, and the guard
that tells a stage limited by the load generator (or the machine) from a calm one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from loadproof.execute import run_stages
from loadproof.plan import make_plan
from loadproof.progress import Progress

from .helpers import tiny_server


@pytest.mark.slow
def test_calm_stage_is_not_flagged(tmp_path: Path) -> None:
    # 10 users against a 20 ms target: k6 and the server idle most of the time
    with tiny_server(delay_s=0.02) as url:
        run = run_stages(make_plan("10", stage_duration="3s"), label="calm", target=url,
                         script="quick", out_dir=tmp_path, progress=Progress(quiet=True))
    (record,) = run.stages
    guard, cpu = record["generator"], record["conditions"]
    # the load never limits a calm stage: no reason names k6, its rate or its VUs; the one
    # reason such a stage can get is a machine that other processes saturated (a shared
    # machine), and then the reason names them and they, not the load, used the CPU
    if guard["limited"]:
        (reason,) = guard["reasons"]
        assert reason.startswith("machine CPU") and "other processes" in reason, guard
        assert cpu["other_cpu_cores"] > cpu["k6_cpu_cores"] + cpu["loadproof_cpu_cores"], cpu
    resources = pl.read_parquet(run.path / record["resources_file"])
    assert set(resources["process"].cast(pl.String)) == {"machine", "k6"}
    assert resources.filter(pl.col("process") == "k6").height >= 2
    summary = record["resources"]
    assert 0 < summary["k6"]["cpu_percent_mean"] < 90 and summary["k6"]["rss_mb_max"] > 10
    conditions = record["conditions"]
    assert conditions["k6_cpu_cores"] > 0 and conditions["other_includes"] == ["target"]


@pytest.mark.slow
def test_saturating_stage_is_flagged(tmp_path: Path) -> None:
    # every core kept busy by other processes while k6 runs: the machine, not the target,
    # is what such a stage measures
    burners = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\n"
                                 "while time.time() < end: pass"])
               for _ in range(os.cpu_count() or 2)]
    try:
        with tiny_server() as url:
            run = run_stages(make_plan("20", stage_duration="4s"), label="busy", target=url,
                             script="quick", out_dir=tmp_path, progress=Progress(quiet=True))
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    (record,) = run.stages
    guard = record["generator"]
    assert guard["limited"] is True, guard
    assert any("machine CPU" in r for r in guard["reasons"])
