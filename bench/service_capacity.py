"""The reference service's two profiles, baseline and optimized, in short alternating rounds
(the order of the arms alternates each round; each arm runs alone, its service stopped before
the next starts), through loadproof itself, k6 on the same machine. Medians are quoted, with
the machine's load average, since a shared machine makes every figure noisy.

a. Below capacity: the journey at 150 users (closed model). Target for optimized: >= 99.9% 2xx
   (admission control sheds nothing).
b. Overload: POST /task offered at --overload-rate (default 3,000 req/s: about 3x what the
   optimized profile served on a quiet 2-core machine before group commit; it now serves
   about that much, and k6 on the same 2 cores cannot offer 3x more) for --overload-duration,
   then a calm stage at --calm-rate. Targets for optimized: every answer 2xx or 429 (no 5xx,
   no timeouts), p95 of the admitted requests <= 250 ms, calm-stage p95 <= 50 ms. To see
   admission control where the service itself is the bottleneck, run it with
   --set group_commit=false --overload-rate 2000.
c. Capacity under the SLO (p95 <= 50 ms, >= 99% 2xx, open model) per arm, from loadproof's
   capacity search (runner/capacity.py), or a fixed sweep with --sweep. Target:
   optimized / baseline >= 1.5.
d. The optimized profile at --rate (1,000) req/s for --duration: p95 <= 50 ms, p99 <= 150 ms,
   >= 99.9% 2xx, no dropped iterations.

The optimized arm runs as its profile says; --set KEY=VALUE changes it for parts a, b and d
(the capacity search starts the profile as it is), e.g. --set admission_enabled=false to see
the same load without admission control.

    python bench/service_capacity.py [--rounds 3] [--parts abcd] [--overload-rate 3000] ...
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from loadproof.capacity import make_settings, run_capacity_search  # noqa: E402
from loadproof.compare import Slo, arm_capacity  # noqa: E402
from loadproof.execute import run_stages  # noqa: E402
from loadproof.metrics import StageMetrics, stage_metrics  # noqa: E402
from loadproof.plan import make_plan  # noqa: E402
from loadproof.progress import Progress  # noqa: E402

from bench._common import figure, median  # noqa: E402

ARMS = ("baseline", "optimized")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} cores"


def stages(profile: str, levels: list[int], *, model: str, script: str, duration: str,
           warmup: str, out: Path, overrides: dict[str, Any] | None = None) -> list[StageMetrics]:
    run = run_stages(make_plan(levels, model=model, stage_duration=duration, warmup=warmup),
                     label=f"{profile}-{script}-{model}", profile=profile, script=script,
                     out_dir=out, progress=Progress(quiet=True), service_overrides=overrides)
    return stage_metrics(run)


def line(m: StageMetrics) -> str:
    ok, every = m.latency_ok, m.latency_all
    return (f"{m.level:>5} {'users' if m.model == 'vus' else 'req/s'}: {m.requests} answers, "
            f"2xx {m.success_rate or 0:.3%}, 429 {m.rate_limited}, errors {m.errors}, "
            f"p95 admitted {ok.p95_ms or 0:.1f} ms (p99 {ok.p99_ms or 0:.1f}), "
            f"p95 all {every.p95_ms or 0:.1f} ms, dropped {m.dropped_iterations}")


def p95(m: StageMetrics) -> float:
    return m.latency_ok.p95_ms if m.latency_ok.p95_ms is not None else float("inf")


def overrides(profile: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The --set overrides, for the optimized arm only."""
    if profile != "optimized" or not args.set:
        return None
    return dict(item.split("=", 1) for item in args.set)


def part_a(profile: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    (m,) = stages(profile, [args.users], model="vus", script="journey",
                  duration=args.journey_duration, warmup="3s", out=out,
                  overrides=overrides(profile, args))
    print(f"   a {profile:<9} {line(m)}", flush=True)
    return {"ok": m.success_rate or 0.0, "shed": float(m.rate_limited)}


def part_b(profile: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    hot, calm = stages(profile, [args.overload_rate, args.calm_rate], model="rate",
                       script="submit", duration=args.overload_duration, warmup="0s", out=out,
                       overrides=overrides(profile, args))
    print(f"   b {profile:<9} {line(hot)}\n   b {profile:<9} {line(calm)}  (calm)", flush=True)
    return {"errors": float(hot.errors), "p95": p95(hot), "calm_p95": p95(calm),
            "calm_errors": float(calm.errors), "shed_share": hot.rate_limited_share or 0.0,
            "admitted_rps": hot.goodput_rps or 0.0}


def part_c(profile: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    if not args.sweep:
        # the search starts the profile as its TOML says (--set does not reach it)
        settings = make_settings(slo_p95_ms=50.0, slo_success=0.99, min_rate=args.min_rate,
                                 max_rate=args.max_rate, trial_duration=args.trial_duration,
                                 budget=args.search_budget)
        result = run_capacity_search(settings, label=f"{profile}-capacity", profile=profile,
                                     out_dir=out, progress=Progress(quiet=True))
        for trial in result.trials:
            print(f"   c {profile:<9} trial {trial.level} req/s: "
                  f"{'pass' if trial.passed else 'fail'} ({trial.reason})", flush=True)
        print(f"   c {profile:<9} capacity {result.capacity} req/s, first fail "
              f"{result.first_fail}, limited by {result.limited_by}; {result.note}", flush=True)
        return {"capacity": float(result.capacity or 0)}
    metrics = stages(profile, [int(r) for r in args.rates.split(",")], model="rate",
                     script="submit", duration=args.sweep_duration, warmup="3s", out=out,
                     overrides=overrides(profile, args))
    for m in metrics:
        print(f"   c {profile:<9} {line(m)}", flush=True)
    cap = arm_capacity(metrics, Slo(p95_ms=50.0, success=0.99))
    print(f"   c {profile:<9} capacity {cap.shown(' req/s')} ({cap.bound})", flush=True)
    return {"capacity": float(cap.level or 0)}


def part_d(args: argparse.Namespace, out: Path) -> dict[str, float]:
    (m,) = stages("optimized", [args.rate], model="rate", script="submit",
                  duration=args.duration, warmup="5s", out=out,
                  overrides=overrides("optimized", args))
    print(f"   d optimized {line(m)}", flush=True)
    return {"p95": p95(m), "p99": m.latency_ok.p99_ms or float("inf"),
            "ok": m.success_rate or 0.0, "dropped": float(m.dropped_iterations or 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="abcd", help="which parts to run, e.g. ab")
    parser.add_argument("--users", type=int, default=150)
    parser.add_argument("--journey-duration", default="15s")
    parser.add_argument("--overload-rate", type=int, default=3000)
    parser.add_argument("--overload-duration", default="10s")
    parser.add_argument("--calm-rate", type=int, default=200)
    parser.add_argument("--min-rate", type=int, default=100, help="capacity search start")
    parser.add_argument("--max-rate", type=int, default=3000)
    parser.add_argument("--trial-duration", default="10s")
    parser.add_argument("--search-budget", default="5m", help="per arm and round")
    parser.add_argument("--sweep", action="store_true",
                        help="part c from a fixed sweep of --rates instead of the search")
    parser.add_argument("--rates", default="200,400,600,800,1000,1200,1400")
    parser.add_argument("--sweep-duration", default="10s")
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--duration", default="30s")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the optimized arm, e.g. --set "
                             "admission_enabled=false")
    args = parser.parse_args()
    parts = set(args.parts)
    runs: dict[str, Callable[[str, argparse.Namespace, Path], dict[str, float]]] = {
        "a": part_a, "b": part_b, "c": part_c}
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    d_results: list[dict[str, float]] = []
    loads = []
    with tempfile.TemporaryDirectory() as tmp_name:
        out = Path(tmp_name)
        for round_no in range(1, args.rounds + 1):
            order = ARMS if round_no % 2 else ARMS[::-1]
            print(f"round {round_no}: {' then '.join(order)}; {load()}", flush=True)
            loads.append(os.getloadavg()[0])
            for part in "abc":
                if part in parts:
                    for arm in order:
                        results.setdefault((part, arm), []).append(runs[part](arm, args, out))
            if "d" in parts:
                d_results.append(part_d(args, out))
        loads.append(os.getloadavg()[0])
    print(f"\nmedians over {args.rounds} rounds; 1-minute load average at round starts and end: "
          f"{', '.join(f'{x:.2f}' for x in loads)} on {os.cpu_count()} cores")

    def med(part: str, arm: str, key: str) -> float:
        return median([r[key] for r in results[(part, arm)]])

    if "a" in parts:
        for arm in ARMS:
            ok = med("a", arm, "ok")
            figure(f"a. {arm}: journey {args.users} users, 2xx share", ok * 100, "%",
                   *(("≥ 99.9", ok >= 0.999) if arm == "optimized" else ()))
            figure(f"a. {arm}: requests shed (429)", med("a", arm, "shed"), "")
    if "b" in parts:
        for arm in ARMS:
            errors, hot, calm = (med("b", arm, k) for k in ("errors", "p95", "calm_p95"))
            target = arm == "optimized"
            figure(f"b. {arm}: {args.overload_rate} req/s, answers neither 2xx nor 429", errors,
                   "", *(("0", errors == 0) if target else ()))
            figure(f"b. {arm}: p95 of admitted (2xx)", hot, "ms",
                   *(("≤ 250", hot <= 250) if target else ()))
            figure(f"b. {arm}: share shed (429)", med("b", arm, "shed_share") * 100, "%")
            figure(f"b. {arm}: admitted per second", med("b", arm, "admitted_rps"), "req/s")
            figure(f"b. {arm}: calm {args.calm_rate} req/s right after, p95", calm, "ms",
                   *(("≤ 50", calm <= 50) if target else ()))
    if "c" in parts:
        for arm in ARMS:
            figure(f"c. {arm}: capacity (p95 ≤ 50 ms, ≥ 99% 2xx)", med("c", arm, "capacity"),
                   "req/s")
        ratios = [o["capacity"] / b["capacity"]
                  for b, o in zip(results[("c", "baseline")], results[("c", "optimized")],
                                  strict=True) if b["capacity"]]
        if ratios:
            ratio = median(ratios)
            figure("c. capacity ratio optimized / baseline (median of rounds)", ratio, "x",
                   "≥ 1.5", ratio >= 1.5)
        else:
            print("c. capacity ratio: not measurable (baseline met the SLO at no rate swept)")
    if "d" in parts:
        p95_, p99_, ok, dropped = (median([r[k] for r in d_results])
                                   for k in ("p95", "p99", "ok", "dropped"))
        figure(f"d. optimized at {args.rate} req/s: p95 of 2xx", p95_, "ms", "≤ 50", p95_ <= 50)
        figure(f"d. optimized at {args.rate} req/s: p99 of 2xx", p99_, "ms", "≤ 150",
               p99_ <= 150)
        figure(f"d. optimized at {args.rate} req/s: 2xx share", ok * 100, "%", "≥ 99.9",
               ok >= 0.999)
        figure(f"d. optimized at {args.rate} req/s: dropped iterations", dropped, "", "0",
               dropped == 0)


if __name__ == "__main__":
    main()
