"""Runner overhead: requests/s achieved through `loadproof run` against a fixed target, as a
share of a plain `k6 run` of the same script with the same options, measured in the same run
(alternating, medians). The target is the reference service's /health/live on loopback.

    python bench/runner_overhead.py [--vus 20] [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import figure, median  # noqa: E402
from runner.k6bin import find_k6  # noqa: E402
from runner.metrics import stage_metrics  # noqa: E402
from runner.scripts import resolve_script  # noqa: E402
from runner.store import load_run  # noqa: E402
from services.orchestrator.server import ServiceProcess  # noqa: E402


def plain_k6(url: str, vus: int, duration: int, tmp: Path, csv: bool = False) -> float:
    summary = tmp / "plain-summary.json"
    env = dict(os.environ, LP_TARGET=url, LP_PATH="/health/live", LP_MODEL="vus",
               LP_LEVEL=str(vus), LP_DURATION=f"{duration}s", LP_SUMMARY_PATH=str(summary),
               K6_NO_USAGE_REPORT="true")
    extra = ["--out", f"csv={tmp / 'plain.csv'}"] if csv else []
    subprocess.run([str(find_k6()), "run", "--quiet", *extra, str(resolve_script("quick"))],
                   env=env, check=True, capture_output=True)
    data = json.loads(summary.read_text())
    count = data["metrics"]["http_reqs{scenario:main}"]["values"]["count"]
    return float(count) / duration


def through_loadproof(url: str, vus: int, duration: int, tmp: Path) -> float:
    env = dict(os.environ, LP_PATH="/health/live")
    out = subprocess.run([sys.executable, "-m", "runner.cli", "run", "--target", url,
                          "--label", "overhead", "--stages", str(vus), "--stage-duration",
                          f"{duration}s", "--script", "quick", "--out", str(tmp / "runs")],
                         env=env, check=True, capture_output=True, text=True, cwd=ROOT)
    run = load_run(out.stdout.strip().splitlines()[-1])
    (stage,) = stage_metrics(run)
    return stage.requests / stage.duration_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vus", type=int, default=20)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with ServiceProcess("baseline") as svc, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plain, plain_csv, ours = [], [], []
        for _ in range(args.rounds):  # interleaved, so drift hits all three alike
            plain.append(plain_k6(svc.url, args.vus, args.duration, tmp))
            plain_csv.append(plain_k6(svc.url, args.vus, args.duration, tmp, csv=True))
            ours.append(through_loadproof(svc.url, args.vus, args.duration, tmp))
        share = median(ours) / median(plain)
        figure("plain k6 run, requests/s, median", median(plain), "req/s")
        figure("plain k6 run --out csv, requests/s, median", median(plain_csv), "req/s")
        figure("loadproof run (raw CSV + parquet), requests/s, median", median(ours), "req/s")
        figure("loadproof / plain k6", share * 100, "%", ">= 95", share >= 0.95)
        figure("k6 --out csv / plain k6 (k6's own cost of per-request data)",
               median(plain_csv) / median(plain) * 100, "%")
        figure("loadproof / k6 --out csv (the runner's own cost)",
               median(ours) / median(plain_csv) * 100, "%")


if __name__ == "__main__":
    main()
