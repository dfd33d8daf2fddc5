"""The server's count against k6's: the reference service (real embedded PostgreSQL) at a
fixed arrival rate of POST /task, one stage per round with a warm-up, each a fresh run. Prints
per round the requests k6 stored and the server counted between the scrapes, their
difference, k6's p95 of all requests against the server's histogram p95, whether the
window's edges were clean, and the generator guard; then the medians. The issue's goal: the
counts agree within 1% at 200 req/s.

    python bench/server_crosscheck.py [--rate 200] [--seconds 5] [--rounds 3] [--profile optimized]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import figure, median  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default="optimized")
    args = parser.parse_args()

    from loadproof.execute import run_stages
    from loadproof.plan import make_plan
    from loadproof.progress import Progress

    gaps, p95_gaps = [], []
    with tempfile.TemporaryDirectory(prefix="loadproof-bench-") as tmp:
        for round_no in range(1, args.rounds + 1):
            run = run_stages(make_plan(str(args.rate), model="rate",
                                       stage_duration=f"{args.seconds}s", warmup="1s"),
                             label=f"crosscheck-{round_no}", profile=args.profile,
                             script="submit", out_dir=Path(tmp), progress=Progress(quiet=True))
            (record,) = run.stages
            server = record["server"]
            if "error" in server:
                print(f"round {round_no}: server not read: {server['error']}")
                continue
            client, counted = record["requests"], server["requests_total"]
            gap = abs(counted - client) / client
            gaps.append(gap)
            p95_gaps.append(server["client_p95_ms"] - server["p95_ms"])
            print(f"round {round_no}: k6 {client} requests, server {counted} "
                  f"{server['requests']} ({gap:.2%} apart); p95 k6 {server['client_p95_ms']:.1f}"
                  f" ms, server {server['p95_ms']:.1f} ms; edges clean "
                  f"{server['edges'].get('clean')}; guard limited "
                  f"{record['generator']['limited']} {record['generator']['reasons']}")
    if gaps:
        figure(f"count difference at {args.rate} req/s (median of {len(gaps)})",
               100 * median(gaps), "%", "< 1%", median(gaps) < 0.01)
        figure("k6 p95 minus server p95 (median)", median(p95_gaps), "ms")


if __name__ == "__main__":
    main()
