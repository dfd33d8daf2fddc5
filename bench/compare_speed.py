"""Comparison speed: two runs of 1 million requests each (4 stages of 250,000), bootstrap
intervals included, from stored parquet to the finished Comparison.

    python bench/compare_speed.py [--requests 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from loadproof.compare import compare_runs  # noqa: E402

from bench._common import figure, median, timed  # noqa: E402
from tests.helpers import make_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    per_stage = args.requests // 4
    levels = [10, 50, 100, 150]
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for label, scale in (("baseline", 40.0), ("optimized", 12.0)):
            stages = {}
            for level in levels:
                durations = list(rng.lognormal(np.log(scale * (1 + level / 100)), 0.6, per_stage))
                statuses = list(rng.choice([200, 200, 200, 200, 429, 500], per_stage))
                stages[f"s{levels.index(level) + 1}-{level}vus"] = (level, durations, statuses)
            runs.append(make_run(Path(tmp), label, stages, duration_s=30.0))
        total = sum(sum(s["requests"] for s in r.stages) for r in runs)
        print(f"{total:,} requests in two runs of {len(levels)} stages", flush=True)
        times = [timed(lambda: compare_runs(runs[0], runs[1]))[0] for _ in range(args.rounds)]
        figure(f"compare two runs of {args.requests:,} requests, median of {args.rounds}",
               median(times), "s", "< 5", median(times) < 5)


if __name__ == "__main__":
    main()
