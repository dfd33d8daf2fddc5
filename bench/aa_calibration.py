"""A/A calibration of the comparison: how often it calls a difference where there is none.

(a) Simulated: synthetic runs with run-level noise (3% per repeat by default) and drift within
    each stage, written in the run-store format and compared by loadproof's own code. Prints
    the share of single comparisons called significant (stage x metric, 95% nominal) and the
    share of reports that make any headline claim (after Holm's correction), beside what the
    alternatives would have called on the same kind of data: a percentile bootstrap over
    repeats, and the request-level bootstrap loadproof used before.
(b) Real: the reference service's `baseline` profile as both arms of a pipeline experiment
    (interleaved ABBA, each arm alone), every verdict printed.

    python bench/aa_calibration.py [--comparisons 200] [--repeats 3] [--no-real]
        [--real-stages 10,50,100,150] [--real-duration 6s] [--real-repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from loadproof.calibration import Noise, aa_rates  # noqa: E402


def alternatives(comparisons: int, repeats: int, noise: Noise, seed: int) -> dict[str, float]:
    """The share of A/A p95 comparisons two other methods call significant, on per-repeat
    samples drawn like the simulation's (one 10-user-like stage, 500 requests a repeat)."""
    rng = np.random.default_rng(seed)
    hits = {"percentile bootstrap over repeats": 0, "request-level bootstrap (pooled)": 0}

    def arm() -> list[np.ndarray]:
        return [np.exp(np.log(20 * float(np.exp(rng.normal(0, noise.run_noise))))
                       + rng.normal(0, noise.sigma, 500)) for _ in range(repeats)]

    for _ in range(comparisons):
        a, b = arm(), arm()
        pa = np.array([np.percentile(x, 95) for x in a])
        pb = np.array([np.percentile(x, 95) for x in b])
        draws = [np.exp(np.mean(np.log(rng.choice(pa, repeats))))
                 / np.exp(np.mean(np.log(rng.choice(pb, repeats)))) for _ in range(400)]
        low, high = np.percentile(draws, [2.5, 97.5])
        hits["percentile bootstrap over repeats"] += low > 1 or high < 1
        pooled_a, pooled_b = np.concatenate(a), np.concatenate(b)
        draws = [np.percentile(rng.choice(pooled_a, len(pooled_a)), 95)
                 / np.percentile(rng.choice(pooled_b, len(pooled_b)), 95) for _ in range(200)]
        low, high = np.percentile(draws, [2.5, 97.5])
        hits["request-level bootstrap (pooled)"] += low > 1 or high < 1
    return {name: count / comparisons for name, count in hits.items()}


def simulated(args: argparse.Namespace) -> None:
    noise = Noise(run_noise=args.run_noise)
    print(f"(a) simulated A/A: {args.comparisons} comparisons, {args.repeats} repeats per arm, "
          f"stages 10/50/100/150 users x 6 s, run-level noise {noise.run_noise:.0%}, drift "
          f"{noise.drift:.0%} within a stage")
    started = time.monotonic()
    rates = aa_rates(args.comparisons, seed=args.seed, repeats=args.repeats, noise=noise)
    print(f"    loadproof (Welch t on per-repeat log estimates, Holm across claims), "
          f"{time.monotonic() - started:.0f} s:")
    print(f"      single comparisons called significant: {rates['per_comparison_rate']:.1%} "
          f"of {rates['tested']} (nominal 5%, target <= 7%)")
    print(f"      reports making any headline claim:     {rates['per_report_rate']:.1%} "
          f"of {rates['comparisons']}")
    for claims in rates["claims"]:
        print(f"        claimed by chance: {claims}")
    print(f"    the same kind of data, p95 only, {min(args.comparisons, 400)} comparisons:")
    for name, rate in alternatives(min(args.comparisons, 400), args.repeats, noise,
                                   args.seed).items():
        print(f"      {name}: {rate:.1%} called significant")


EXPERIMENT = """\
title: A/A calibration on the reference service
arms:
  first: {{profile: baseline}}
  second: {{profile: baseline}}
stages: [{stages}]
stage_duration: {duration}
warmup: 2s
repeat: {repeats}
script: journey
"""


def real(args: argparse.Namespace) -> None:
    from loadproof.pipeline import run_pipeline
    from loadproof.progress import Progress

    print(f"\n(b) real A/A: profile baseline as both arms, stages {args.real_stages} users x "
          f"{args.real_duration}, {args.real_repeats} repeats per arm, ABBA, each arm alone")
    with tempfile.TemporaryDirectory(prefix="loadproof-aa-real-") as tmp:
        experiment = Path(tmp) / "aa.yaml"
        experiment.write_text(EXPERIMENT.format(stages=args.real_stages,
                                                duration=args.real_duration,
                                                repeats=args.real_repeats))
        started = time.monotonic()
        out = run_pipeline(experiment, reports_dir=Path(tmp) / "reports",
                           runs_dir=Path(tmp) / "runs", progress=Progress(quiet=True))
        comparison = json.loads((out / "comparison.json").read_text())
        achievement = json.loads((out / "achievement.json").read_text())
        print(f"    ran in {time.monotonic() - started:.0f} s")
        for stage in comparison["stages"]:
            for name, m in stage["metrics"].items():
                ci = f"[{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]" if m["ci95"] else "—"
                ratio = f"{m['ratio']:.3f}" if m["ratio"] is not None else "—"
                print(f"    {stage['key']:<11} {name:<15} ratio {ratio:>6} {ci:<17} "
                      f"p {m['p_value'] if m['p_value'] is None else round(m['p_value'], 3)!s:<6}"
                      f" verdict {m['verdict']:<22} claim {m['claim']}")
            if stage["withheld"]:
                print(f"    {stage['key']:<11} withheld: {'; '.join(stage['withheld'])}")
        print(f"    capacity: {comparison['capacity']['verdict']} "
              f"(ratio {comparison['capacity']['ratio']})")
        print(f"    achievement title: {achievement['title']}")
        print(f"    achievement figures: {achievement['metrics']}")
        claims = {k: v["verdict"] for k, v in achievement["measurements"].items()}
        print(f"    achievement verdicts: {claims}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comparisons", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-noise", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-real", action="store_true", help="skip the real A/A")
    parser.add_argument("--real-stages", default="10,50,100,150")
    parser.add_argument("--real-duration", default="6s")
    parser.add_argument("--real-repeats", type=int, default=3)
    args = parser.parse_args()
    simulated(args)
    if not args.no_real:
        real(args)


if __name__ == "__main__":
    main()
