"""What watching a stage costs loadproof: the resource sampler (once a second, k6's tree, the
target's tree and the machine) and the server-metrics scraper (every 2 s, parsing the
reference service's exposition), each in CPU per second of wall time, i.e. the share of one
core. The issue's goal for the sampler is under 1% of a core.

    python bench/sampler_cost.py [--seconds 10] [--rounds 5] [--children 8]

The sampler watches a real process tree: ``--children`` sleeping child processes stand in
for k6 and the target (the sampler's cost grows with the processes it reads, not with their
load). Its cost is measured two ways: this process's CPU time while the sampler's thread runs
for ``--seconds`` (the main thread sleeps), and the CPU time of one ``sample()`` call times the
one call a second it makes. The scraper's cost is the parse of a real exposition of the
reference service's telemetry (every route, method and status a journey run produces)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import figure, median  # noqa: E402


def _cpu() -> float:
    return time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--children", type=int, default=8)
    args = parser.parse_args()

    from loadproof.conditions import ResourceSampler
    from loadproof.orchestrator.telemetry import Telemetry
    from loadproof.promscrape import TIMELINE_INTERVAL_S, parse
    from prometheus_client import generate_latest

    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
                for _ in range(args.children)]
    try:
        half = len(children) // 2
        groups = {"k6": lambda: [c.pid for c in children[:half]],
                  "target": lambda: [c.pid for c in children[half:]]}
        thread_share = []
        for _ in range(args.rounds):
            before = _cpu()
            sampler = ResourceSampler(groups).start()
            time.sleep(args.seconds)
            sampler.stop()
            thread_share.append((_cpu() - before) / args.seconds)
        sampler = ResourceSampler(groups).start()
        sampler.stop()
        per_call = []
        for _ in range(args.rounds):
            before = _cpu()
            for _ in range(50):
                sampler.sample()
            per_call.append((_cpu() - before) / 50)
    finally:
        for child in children:
            child.kill()
            child.wait()

    telemetry = Telemetry()
    for route, method, status in [("/task", "POST", "201"), ("/task/{id}", "GET", "200"),
                                  ("/task", "POST", "429"), ("/task", "POST", "503"),
                                  ("/health", "GET", "200"), ("/metrics", "GET", "200")]:
        for value in (0.002, 0.03, 0.2, 1.5):
            telemetry.latency.labels(route, method, status).observe(value)
    text = generate_latest(telemetry.registry).decode()
    parse_s = []
    for _ in range(args.rounds):
        before = _cpu()
        for _ in range(20):
            parse(text)
        parse_s.append((_cpu() - before) / 20)

    print(f"{args.children} watched processes, {args.rounds} rounds, medians")
    figure("sampler thread, CPU per wall second (share of a core)",
           100 * median(thread_share), "%", "< 1%", median(thread_share) < 0.01)
    figure("one sample() call, CPU", 1000 * median(per_call), "ms")
    figure("sampler at one call a second (share of a core)", 100 * median(per_call), "%",
           "< 1%", median(per_call) < 0.01)
    figure(f"parse of the service's exposition ({len(text) // 1024} KiB), CPU",
           1000 * median(parse_s), "ms")
    figure(f"scraper's parsing at one scrape per {TIMELINE_INTERVAL_S:g} s (share of a core)",
           100 * median(parse_s) / TIMELINE_INTERVAL_S, "%")


if __name__ == "__main__":
    main()
