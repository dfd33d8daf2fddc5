"""Pipeline overhead: wall time of `loadproof pipeline` against the time k6 spends in stages
(from each stage's start and end in the manifests), on the reference service.

    python bench/pipeline_overhead.py [--stage-duration 20s] [EXPERIMENT.yaml]

Without an experiment it runs baseline vs optimized at 10,50,100,150 users (no probe).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from loadproof.pipeline import run_pipeline  # noqa: E402
from loadproof.progress import Progress  # noqa: E402
from loadproof.store import list_runs  # noqa: E402

from bench._common import figure  # noqa: E402

EXPERIMENT = """\
title: Pipeline overhead
arms:
  baseline: {{profile: baseline}}
  optimized: {{profile: optimized}}
stages: [10, 50, 100, 150]
stage_duration: {duration}
warmup: 2s
"""


def parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", nargs="?")
    parser.add_argument("--stage-duration", default="20s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        experiment = Path(args.experiment) if args.experiment else tmp / "exp.yaml"
        if not args.experiment:
            experiment.write_text(EXPERIMENT.format(duration=args.stage_duration))
        started = time.perf_counter()
        run_pipeline(experiment, reports_dir=tmp / "reports", runs_dir=tmp / "runs",
                     progress=Progress(quiet=True))
        wall = time.perf_counter() - started
        k6_time = sum((parse(s["ended_at"]) - parse(s["started_at"])).total_seconds()
                      for run in list_runs(tmp / "runs") for s in run.stages)
    figure("pipeline wall time", wall, "s")
    figure("time k6 spent in stages (warm-ups included)", k6_time, "s")
    figure("pipeline overhead over k6 time", (wall - k6_time) / k6_time * 100, "%", "<= 10",
           (wall - k6_time) / k6_time <= 0.10)


if __name__ == "__main__":
    main()
