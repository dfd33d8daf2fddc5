"""The one-command pipeline on the reference service (embedded PostgreSQL), kept short."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from loadproof.pipeline import run_pipeline
from loadproof.progress import Progress
from loadproof.store import load_run

EXPERIMENT = """\
title: Pipeline test
arms:
  baseline: {profile: baseline}
  optimized: {profile: optimized, set: {rate_limit_rps: 3000}}
stages: [5, 20]
stage_duration: 2s
warmup: 1s
repeat: 2
capacity: {min_rate: 50, max_rate: 100, trial_duration: 1s, warmup: 1s, cooldown: 0s,
           confirm: 0, budget: 60s, repeat: 1}
report: {interview_value: high}
"""


@pytest.mark.slow
@pytest.mark.timeout(600)  # about 2 minutes on a quiet machine, near 3 on a busy one
def test_pipeline_end_to_end(tmp_path: Path, brief_quiet_wait: float) -> None:
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(EXPERIMENT)
    out = run_pipeline(experiment, reports_dir=tmp_path / "reports",
                       runs_dir=tmp_path / "runs", progress=Progress(quiet=True))
    assert out.parent.name == "exp"
    for name in ("report.html", "report.pdf", "report.md", "achievement.json", "report.ipynb",
                 "experiment.yaml"):
        assert (out / name).is_file(), name
    runs = [load_run(p) for p in sorted((tmp_path / "runs").iterdir())]
    labels = sorted(r.label for r in runs)
    assert labels == ["baseline", "capacity-baseline", "capacity-optimized", "optimized"]
    search = next(r for r in runs if r.label == "capacity-optimized").manifest["capacity_search"]
    assert [t["rate"] for t in search["trials"]] == [50, 100]  # x2 ramp to max_rate
    assert search["result"]["limited_by"] in ("max-rate", "slo")
    assert len(search["searches"]) == 1
    optimized = next(r for r in runs if r.label == "optimized")
    assert optimized.status == "complete" and len(optimized.stages) == 4  # 2 stages x 2 repeats
    assert optimized.manifest["profile"]["settings"]["rate_limit_rps"] == 3000
    for run in runs:  # each arm's repeat waited (briefly, in this test) for a quiet machine
        waits = [s["quiet_before"]["waited_s"] for s in run.manifest["schedule"]]
        assert waits and all(0 < w <= brief_quiet_wait + 5 for w in waits), waits
    for run in (optimized, next(r for r in runs if r.label == "baseline")):
        # the arm's own notebook, executed on its stored run: its table and charts
        executed = nbformat.read(out / f"load_test-{run.label}.ipynb", as_version=4)
        outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
        shown = json.dumps([o.get("data", {}) for o in outputs])
        assert run.run_id in shown or str(run.path.resolve()) in json.dumps(executed.cells[1])
        assert sum(1 for o in outputs if {"image/png", "image/svg+xml"} & set(o.get("data", {}))
                   or "<figure><picture>" in o.get("data", {}).get("text/html", "")) \
            >= 3  # latency, throughput, outcomes (captioned SVG figures)
        assert "s2-20vus" in shown  # the run's table lists its stages
    feed = json.loads((tmp_path / "reports" / "feed.json").read_text())
    assert len(feed["items"]) == 1
    page = (tmp_path / "reports" / "index.html").read_text()  # the portfolio page follows
    assert page.count('<li class="card"') == 1 and f'href="exp/{out.name}/report.html"' in page
