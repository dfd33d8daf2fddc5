"""Raw per-request output while a stage runs: what k6's plain CSV, k6's gzip CSV (an output file
name ending in .gz) and no per-request output cost in requests/s, and how many bytes each
leaves on disk per request.

Same target and script as bench/runner_overhead.py (the reference service's /health/live on
loopback, 20 virtual users, loadproof's Go GC settings for k6); the three commands run back to
back in an order that reverses every round, and ratios are taken within each round.

    python bench/raw_output.py [--vus 20] [--duration 5] [--rounds 8]
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
from loadproof.k6bin import GO_GC_KEYS, find_k6, k6_gc_defaults  # noqa: E402
from loadproof.orchestrator.server import ServiceProcess  # noqa: E402
from loadproof.scripts import resolve_script  # noqa: E402

from bench._common import figure, median  # noqa: E402

OUTPUTS = {"none": None, "csv": "raw.csv", "csv.gz": "raw.csv.gz"}


def k6_run(url: str, vus: int, duration: int, tmp: Path, output: str | None) \
        -> tuple[float, int, int]:
    """(requests/s, requests, bytes of the raw output file)."""
    summary = tmp / "summary.json"
    env = dict({k: v for k, v in os.environ.items() if k not in GO_GC_KEYS}, LP_TARGET=url,
               LP_PATH="/health/live", LP_MODEL="vus", LP_LEVEL=str(vus),
               LP_DURATION=f"{duration}s", LP_SUMMARY_PATH=str(summary),
               K6_NO_USAGE_REPORT="true", **k6_gc_defaults())
    extra = ["--out", f"csv={tmp / output}"] if output else []
    subprocess.run([str(find_k6()), "run", "--quiet", *extra, str(resolve_script("quick"))],
                   env=env, check=True, capture_output=True, timeout=duration + 60)
    size = 0
    if output:
        size = (tmp / output).stat().st_size
        (tmp / output).unlink()
    data = json.loads(summary.read_text())
    count = int(data["metrics"]["http_reqs{scenario:main}"]["values"]["count"])
    return count / duration, count, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vus", type=int, default=20)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in OUTPUTS}
    per_request: dict[str, list[float]] = {name: [] for name in OUTPUTS}
    with ServiceProcess("baseline") as svc, tempfile.TemporaryDirectory() as tmp_name:
        for round_no in range(args.rounds):
            order = list(OUTPUTS) if round_no % 2 == 0 else list(reversed(OUTPUTS))
            for name in order:
                rate, count, size = k6_run(svc.url, args.vus, args.duration, Path(tmp_name),
                                           OUTPUTS[name])
                rates[name].append(rate)
                per_request[name].append(size / count if count else 0.0)
            print(f"round {round_no + 1}/{args.rounds}: "
                  + "  ".join(f"{n} {rates[n][-1]:,.0f} req/s" for n in OUTPUTS)
                  + f"  (load average {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)

    def share(a: str, b: str) -> float:
        return median([x / y for x, y in zip(rates[a], rates[b], strict=True)]) * 100

    for name in OUTPUTS:
        figure(f"k6 --out {name}: requests/s, median of {args.rounds}", median(rates[name]),
               "req/s")
    for name in ("csv", "csv.gz"):
        figure(f"k6 --out {name}: bytes on disk per request, median", median(per_request[name]),
               "B")
    gz_share = share("csv.gz", "csv")
    figure("k6 gzip CSV / k6 plain CSV, requests/s, median of per-round ratios", gz_share, "%",
           ">= 95", gz_share >= 95)
    disk = median(per_request["csv.gz"]) / median(per_request["csv"]) * 100
    figure("k6 gzip CSV / plain CSV, bytes on disk", disk, "%", "<= 10", disk <= 10)
    figure("k6 plain CSV / no per-request output, requests/s", share("csv", "none"), "%")
    figure("k6 gzip CSV / no per-request output, requests/s", share("csv.gz", "none"), "%")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
