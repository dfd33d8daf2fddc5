"""The reference service under an open model (constant-arrival-rate POST /task) with k6 on the
same machine, through loadproof itself.

1. The optimized profile at 1,000 requests/s for 30 s, workers running: p95, p99, 2xx share,
   dropped iterations, against the targets p95 <= 50 ms, p99 <= 150 ms, >= 99.9% 2xx, none
   dropped. Repeated --rounds times; medians are quoted.
2. Each profile's capacity: the highest rate held at p95 <= 50 ms and >= 99% 2xx, from one sweep
   per profile in the same run, and their ratio.

    python bench/service_capacity.py [--rounds 3] [--rates 200,400,...] [--sweep-duration 10s]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from loadproof.compare import Slo, arm_capacity  # noqa: E402
from loadproof.execute import run_stages  # noqa: E402
from loadproof.metrics import stage_metrics  # noqa: E402
from loadproof.plan import make_plan  # noqa: E402
from loadproof.progress import Progress  # noqa: E402

from bench._common import figure, median  # noqa: E402


def held(profile: str, rate: int, duration: str, out: Path, overrides: dict[str, Any]) -> Any:
    run = run_stages(make_plan([rate], model="rate", stage_duration=duration, warmup="5s"),
                     label=f"{profile}-{rate}rps", profile=profile, script="submit",
                     out_dir=out, progress=Progress(quiet=True), service_overrides=overrides)
    (stage,) = stage_metrics(run)
    return stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--duration", default="30s")
    parser.add_argument("--rates", default="200,400,600,800,1000,1200,1400")
    parser.add_argument("--sweep-duration", default="10s")
    parser.add_argument("--no-sweep", action="store_true", help="part 1 only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an optimized-profile setting for part 1")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    with tempfile.TemporaryDirectory() as tmp_name:
        out = Path(tmp_name)
        print(f"1. optimized profile at {args.rate} req/s for {args.duration}, "
              f"{args.rounds} rounds {overrides or ''}", flush=True)
        rounds = [held("optimized", args.rate, args.duration, out, overrides)
                  for _ in range(args.rounds)]
        for i, m in enumerate(rounds, 1):
            print(f"   round {i}: p95 {m.latency_ok.p95_ms:.1f} ms, p99 {m.latency_ok.p99_ms:.1f} ms,"
                  f" 2xx {m.success_rate:.4%}, dropped {m.dropped_iterations}, "
                  f"{m.requests / m.duration_s:.0f} req/s", flush=True)
        p95 = median([m.latency_ok.p95_ms for m in rounds])
        p99 = median([m.latency_ok.p99_ms for m in rounds])
        ok = median([m.success_rate for m in rounds])
        dropped = median([float(m.dropped_iterations or 0) for m in rounds])
        figure("p95 of 2xx answers, median", p95, "ms", "<= 50", p95 <= 50)
        figure("p99 of 2xx answers, median", p99, "ms", "<= 150", p99 <= 150)
        figure("2xx share, median", ok * 100, "%", ">= 99.9", ok >= 0.999)
        figure("dropped iterations, median", dropped, "", "0", dropped == 0)

        if args.no_sweep:
            return
        print(f"2. capacity sweep at {args.rates} req/s, {args.sweep_duration} each", flush=True)
        slo = Slo(p95_ms=50.0, success=0.99)
        capacity = {}
        for profile in ("baseline", "optimized"):
            run = run_stages(make_plan(args.rates, model="rate",
                                       stage_duration=args.sweep_duration, warmup="3s"),
                             label=f"sweep-{profile}", profile=profile, script="submit",
                             out_dir=out, progress=Progress(quiet=True))
            metrics = stage_metrics(run)
            for m in metrics:
                print(f"   {profile:<9} {m.level:>5} req/s: p95 {m.latency_ok.p95_ms:8.1f} ms, "
                      f"2xx {m.success_rate:.2%}, dropped {m.dropped_iterations}", flush=True)
            cap = arm_capacity(metrics, slo)
            capacity[profile] = cap
            bound = "≥" if cap.bound == "at_least" else ""
            figure(f"{profile} capacity (p95 <= 50 ms, >= 99% 2xx)",
                   float(cap.level or 0), f"req/s {bound}".strip())
        base, opt = capacity["baseline"].level, capacity["optimized"].level
        if base and opt:
            figure("capacity ratio optimized / baseline", opt / base, "x")
        else:
            print("capacity ratio: not measurable (a profile met the SLO at no rate)")


if __name__ == "__main__":
    main()
