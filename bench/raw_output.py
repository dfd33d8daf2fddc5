"""Raw per-request output while a stage runs: what each way of keeping k6's per-request CSV
costs in requests/s and how much raw data it leaves on disk at its peak.

- ``none``: no per-request output (the ceiling);
- ``csv``: k6 writes its plain CSV (``--raw-output csv``, the former default);
- ``k6-gzip``: k6's own gzip output (an output file name ending in .gz); not used by
  loadproof, because k6 does not flush it before the test ends, so nothing can follow it live;
- ``pipe-gzip``: loadproof's default (``--raw-output csv.gz``, runner/rawpipe.py): k6 writes
  its plain CSV into a named pipe, a separate process gzips it with a sync flush after each of
  k6's writes.

Same target and script as bench/runner_overhead.py (the reference service's /health/live on
loopback, 20 virtual users, loadproof's Go GC settings for k6). The commands run back to back
in an order that reverses every round; ratios are taken within each round and their medians
quoted. The peak on disk is the largest size of the stage's raw file seen while k6 runs
(sampled every 0.1 s) or after it ends, whichever is larger; CPU seconds are k6's plus the
gzip process's.

    python bench/raw_output.py [--vus 20] [--duration 5] [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from loadproof.k6bin import GO_GC_KEYS, find_k6, k6_gc_defaults  # noqa: E402
from loadproof.orchestrator.server import ServiceProcess  # noqa: E402
from loadproof.rawpipe import RawSink, k6_target  # noqa: E402
from loadproof.scripts import resolve_script  # noqa: E402

from bench._common import figure, median  # noqa: E402

OUTPUTS = {"none": None, "csv": "raw.csv", "k6-gzip": "raw.csv.gz", "pipe-gzip": "raw.csv.gz"}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def k6_run(url: str, vus: int, duration: int, tmp: Path, name: str) \
        -> tuple[float, int, int, float]:
    """(requests/s, requests, peak bytes of the raw output on disk, CPU seconds)."""
    summary = tmp / "summary.json"
    env = dict({k: v for k, v in os.environ.items() if k not in GO_GC_KEYS}, LP_TARGET=url,
               LP_PATH="/health/live", LP_MODEL="vus", LP_LEVEL=str(vus),
               LP_DURATION=f"{duration}s", LP_SUMMARY_PATH=str(summary),
               K6_NO_USAGE_REPORT="true", **k6_gc_defaults())
    output = OUTPUTS[name]
    raw = tmp / output if output else None
    sink = RawSink(raw) if raw is not None and name == "pipe-gzip" else None
    written = (k6_target(raw) if sink is not None else raw) if raw is not None else None
    extra = ["--out", f"csv={written}"] if written is not None else []
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.wait(0.1):
            if raw is not None and raw.is_file():
                peak = max(peak, raw.stat().st_size)

    watcher = threading.Thread(target=watch, daemon=True)
    cpu = _children_cpu()
    watcher.start()
    try:
        if sink is not None:
            sink.start()
        subprocess.run([str(find_k6()), "run", "--quiet", *extra, str(resolve_script("quick"))],
                       env=env, check=True, capture_output=True, timeout=duration + 60)
    finally:
        if sink is not None:
            sink.finish()
        done.set()
        watcher.join()
    cpu = _children_cpu() - cpu
    if raw is not None:
        peak = max(peak, raw.stat().st_size)
        raw.unlink()
    data = json.loads(summary.read_text())
    count = int(data["metrics"]["http_reqs{scenario:main}"]["values"]["count"])
    return count / duration, count, peak, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vus", type=int, default=20)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in OUTPUTS}
    per_request: dict[str, list[float]] = {name: [] for name in OUTPUTS}
    cpus: dict[str, list[float]] = {name: [] for name in OUTPUTS}
    with ServiceProcess("baseline") as svc, tempfile.TemporaryDirectory() as tmp_name:
        for round_no in range(args.rounds):
            order = list(OUTPUTS) if round_no % 2 == 0 else list(reversed(OUTPUTS))
            for name in order:
                rate, count, peak, cpu = k6_run(svc.url, args.vus, args.duration,
                                                Path(tmp_name), name)
                rates[name].append(rate)
                per_request[name].append(peak / count if count else 0.0)
                cpus[name].append(cpu / count * 1e6 if count else 0.0)
            print(f"round {round_no + 1}/{args.rounds}: "
                  + "  ".join(f"{n} {rates[n][-1]:,.0f} req/s" for n in OUTPUTS)
                  + f"  (load average {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)

    def ratio(values: dict[str, list[float]], a: str, b: str) -> float:
        return median([x / y for x, y in zip(values[a], values[b], strict=True) if y]) * 100

    for name in OUTPUTS:
        figure(f"{name}: requests/s, median of {args.rounds}", median(rates[name]), "req/s")
    for name in OUTPUTS:
        figure(f"{name}: CPU (k6 + gzip process) per request, median", median(cpus[name]),
               "µs")
    for name in ("csv", "k6-gzip", "pipe-gzip"):
        figure(f"{name}: peak raw bytes on disk per request, median", median(per_request[name]),
               "B")
    share = ratio(rates, "pipe-gzip", "csv")
    figure("default (pipe-gzip) / plain CSV, requests/s, median of per-round ratios", share, "%",
           ">= 95", share >= 95)
    # per request: the arms of a round send different numbers of requests
    disk = ratio(per_request, "pipe-gzip", "csv")
    figure("default (pipe-gzip) / plain CSV, peak raw bytes on disk per request", disk, "%",
           "<= 10", disk <= 10)
    figure("k6-gzip / plain CSV, requests/s", ratio(rates, "k6-gzip", "csv"), "%")
    figure("plain CSV / no per-request output, requests/s", ratio(rates, "csv", "none"), "%")
    figure("default (pipe-gzip) / no per-request output, requests/s",
           ratio(rates, "pipe-gzip", "none"), "%")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
