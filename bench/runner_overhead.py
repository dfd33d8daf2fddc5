"""Runner overhead: requests/s achieved through `loadproof run` against a fixed target, as a
share of a plain `k6 run` of the same script with the same options, measured in the same run.

The target is the reference service's /health/live on loopback (baseline profile, 20 virtual
users, no think time). Each round runs four commands back to back, in an order that reverses
every round so drift hits them alike:

- plain k6 with k6's defaults (the peer the target is stated against);
- plain k6 with the Go GC settings loadproof gives k6 (what the runner's tuning alone buys);
- k6 --out csv with k6's defaults (what k6's raw per-request output costs);
- loadproof run (raw CSV, live progress, then requests.parquet).

Ratios are taken within each round and their median is quoted: on a shared machine the rate
drifts by more than the effect from one minute to the next, so rounds are short (5 s of load
per command) and many.

    python bench/runner_overhead.py [--vus 20] [--duration 5] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from loadproof.k6bin import GO_GC_KEYS, find_k6, k6_gc_defaults  # noqa: E402
from loadproof.metrics import stage_metrics  # noqa: E402
from loadproof.orchestrator.server import ServiceProcess  # noqa: E402
from loadproof.scripts import resolve_script  # noqa: E402
from loadproof.store import load_run  # noqa: E402

from bench._common import figure, median  # noqa: E402


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in GO_GC_KEYS}


def plain_k6(url: str, vus: int, duration: int, tmp: Path, *, csv: bool = False,
             go_env: dict[str, str] | None = None) -> float:
    summary = tmp / "plain-summary.json"
    env = dict(_base_env(), LP_TARGET=url, LP_PATH="/health/live", LP_MODEL="vus",
               LP_LEVEL=str(vus), LP_DURATION=f"{duration}s", LP_SUMMARY_PATH=str(summary),
               K6_NO_USAGE_REPORT="true", **(go_env or {}))
    extra = ["--out", f"csv={tmp / 'plain.csv'}"] if csv else []
    subprocess.run([str(find_k6()), "run", "--quiet", *extra, str(resolve_script("quick"))],
                   env=env, check=True, capture_output=True, timeout=duration + 60)
    (tmp / "plain.csv").unlink(missing_ok=True)
    data = json.loads(summary.read_text())
    count = data["metrics"]["http_reqs{scenario:main}"]["values"]["count"]
    return float(count) / duration


def through_loadproof(url: str, vus: int, duration: int, tmp: Path) -> float:
    env = dict(_base_env(), LP_PATH="/health/live")
    out = subprocess.run([sys.executable, "-m", "loadproof.cli", "run", "--target", url,
                          "--label", "overhead", "--stages", str(vus), "--stage-duration",
                          f"{duration}s", "--script", "quick", "--out", str(tmp / "runs")],
                         env=env, check=True, capture_output=True, text=True, cwd=ROOT,
                         timeout=duration + 120)
    run = load_run(out.stdout.strip().splitlines()[-1])
    (stage,) = stage_metrics(run)
    return stage.requests / stage.duration_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vus", type=int, default=20)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    gc = k6_gc_defaults()
    with ServiceProcess("baseline") as svc, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        commands: dict[str, Callable[[], float]] = {
            "plain": lambda: plain_k6(svc.url, args.vus, args.duration, tmp),
            "plain_gc": lambda: plain_k6(svc.url, args.vus, args.duration, tmp, go_env=gc),
            "csv": lambda: plain_k6(svc.url, args.vus, args.duration, tmp, csv=True),
            "loadproof": lambda: through_loadproof(svc.url, args.vus, args.duration, tmp),
        }
        rates: dict[str, list[float]] = {name: [] for name in commands}
        for round_no in range(args.rounds):
            order = list(commands) if round_no % 2 == 0 else list(reversed(commands))
            for name in order:
                rates[name].append(commands[name]())
            print(f"round {round_no + 1}/{args.rounds}: "
                  + "  ".join(f"{name} {rates[name][-1]:,.0f}" for name in commands)
                  + " req/s", file=sys.stderr, flush=True)

    def share(a: str, b: str) -> float:
        return median([x / y for x, y in zip(rates[a], rates[b], strict=True)]) * 100

    settings = ", ".join(f"{k}={v}" for k, v in gc.items())
    figure("plain k6 run (k6 defaults), requests/s, median", median(rates["plain"]), "req/s")
    figure(f"plain k6 run ({settings})", median(rates["plain_gc"]), "req/s")
    figure("plain k6 run --out csv (k6 defaults)", median(rates["csv"]), "req/s")
    figure("loadproof run (raw CSV + parquet), requests/s, median", median(rates["loadproof"]),
           "req/s")
    ours = share("loadproof", "plain")
    figure("loadproof / plain k6, median of per-round ratios", ours, "%", ">= 95", ours >= 95)
    figure("k6 --out csv / plain k6 (k6's own cost of per-request data)",
           share("csv", "plain"), "%")
    figure("plain k6 with loadproof's GC settings / plain k6", share("plain_gc", "plain"), "%")
    figure("loadproof / plain k6 with the same GC settings", share("loadproof", "plain_gc"), "%")
    per_round = ", ".join(f"{x / y:.1%}" for x, y in zip(rates["loadproof"], rates["plain"],
                                                         strict=True))
    print(f"loadproof / plain k6 per round: {per_round}")


if __name__ == "__main__":
    main()
