"""Scale: how long `loadproof compare` and `loadproof report` take, and how much memory they
need, on runs of 1 M, 3 M and 10 M requests per arm (a one-hour soak at 3,000 req/s stores
about 10.8 M).

The runs are SYNTHETIC: written straight into the run store's format (manifest.json and
stages/r<N>-<key>/requests.parquet with the columns ingest writes), one open-model soak stage
per arm and repeat, lognormal latencies, a few statuses (200, 429, 500), four endpoint names.
Each command runs as its own process; the peak memory is the largest sum of the resident memory
of the whole process tree (the CLI and, for report, the papermill kernel and anything else it
starts), sampled every 20 ms.

`compare` at 10 M requests per arm (one repeat, so the within-run block bootstrap runs), medians
of 3 in two alternating pairs of rounds on 2 shared cores at a load average of 1.8-1.95: before
the exact bucket percentiles, the weights drawn ahead and the column-by-column frames, 4.97 and
5.60 s wall, 6.36 and 6.95 CPU-s, 975 and 979 MiB peak; after, 4.00 and 3.78 s, 5.82 and
5.47 CPU-s, 605 and 607 MiB (same JSON, byte for byte).

`report` (HTML, PDF, Markdown) at 10 M requests per arm, median of 3 at a load average of 1.4:
15.1 s wall, 21.2 CPU-s, 1,180 MiB peak, report.html 1,237 KiB (the same report.md,
comparison.json and HTML as before on the shipped samples). Before report.md took the charts'
alt text from their plans and the runs' reads were kept apart, one read at a time: 20.6 s
(median of 3, load 1.8) and 1,339-1,447 MiB in single runs.

    python bench/scale.py [--sizes 1000000,3000000,10000000] [--rounds 1] [--repeats 1]
                          [--formats html,pdf,md] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# importing polars (below) sets its allocator's settings in this process's environment; the
# commands timed get the environment this script was started with, as from a shell
_ENV = dict(os.environ)

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from loadproof.ingest import REQUEST_SCHEMA  # noqa: E402
from loadproof.store import FORMAT_VERSION, atomic_write_json  # noqa: E402

from bench._common import median  # noqa: E402

RATE = 3000  # req/s of the synthetic soak
CHUNK = 1_000_000
NAMES = np.array(["GET /health", "POST /task", "GET /task/{id}", "GET /report"])
METHODS = np.array(["GET", "POST", "GET", "GET"])


def _chunk(rng: np.random.Generator, start_us: int, first: int, n: int, median_ms: float,
           key: str, repeat: int) -> pa.Table:
    """Rows first..first+n of a stage: evenly spread arrivals with jitter, in time order."""
    index = np.arange(first, first + n, dtype=np.int64)
    offsets = index * 1_000_000 // RATE + rng.integers(0, 300, n)
    durations = rng.lognormal(np.log(median_ms), 0.5, n)
    draw = rng.uniform(0, 1, n)
    status = np.where(draw < 0.002, 500, np.where(draw < 0.007, 429, 200)).astype(np.int32)
    which = rng.integers(0, len(NAMES), n)
    arrays = {
        "timestamp": pa.array(start_us + offsets + (durations * 1000).astype(np.int64),
                              type=pa.timestamp("us", tz="UTC")),
        "duration_ms": pa.array(durations),
        "status": pa.array(status),
        "expected": pa.array(status != 500),  # 429 expected, as in the shipped scripts
        "name": pa.array(NAMES[which]),
        "method": pa.array(METHODS[which]),
        "error_code": pa.array(np.where(status == 500, 1500, 0).astype(np.int32)),
        "stage": pa.array(np.full(n, key)),
        "repeat": pa.array(np.full(n, repeat, dtype=np.int32)),
    }
    return pa.table(arrays, schema=REQUEST_SCHEMA.to_arrow())


def write_arm(root: Path, label: str, requests: int, repeats: int, median_ms: float,
              seed: int) -> Path:
    """One synthetic run of ``requests`` per arm, split evenly over its repeats."""
    rng = np.random.default_rng(seed)
    path = root / label
    per_repeat = requests // repeats
    duration_s = per_repeat / RATE
    key = f"s1-{RATE}rps"
    records = []
    origin = datetime(2026, 1, 1, tzinfo=UTC)
    for repeat in range(1, repeats + 1):
        folder = f"r{repeat}-{key}"
        (path / "stages" / folder).mkdir(parents=True)
        start = origin + timedelta(hours=2 * repeat)
        start_us = int(start.timestamp() * 1_000_000)
        out = path / "stages" / folder / "requests.parquet"
        with pq.ParquetWriter(out, REQUEST_SCHEMA.to_arrow(), compression="zstd") as writer:
            for first in range(0, per_repeat, CHUNK):
                n = min(CHUNK, per_repeat - first)
                writer.write_table(_chunk(rng, start_us, first, n, median_ms, key, repeat))
        end = start + timedelta(seconds=duration_s)
        records.append({
            "dir": folder, "key": key, "index": 1, "repeat": repeat, "level": RATE,
            "model": "rate", "duration_s": duration_s, "warmup_s": 0.0, "status": "complete",
            "requests": per_repeat, "dropped_iterations": 0,
            "started_at": start.isoformat(), "ended_at": end.isoformat(),
            "load_started_at": start.isoformat(), "measured_s": duration_s,
            "requests_file": f"stages/{folder}/requests.parquet"})
    manifest = {"format_version": FORMAT_VERSION, "run_id": f"synthetic-{label}", "label": label,
                "status": "complete", "status_reason": None, "target": "http://127.0.0.1:1",
                "profile": None, "plan": {"model": "rate", "levels": [RATE],
                                          "duration_s": duration_s, "warmup_s": 0.0,
                                          "repeat": repeats},
                "script": None, "k6": {"version": "synthetic"}, "commit_info": None,
                "machine_info": {}, "started_at": origin.isoformat(), "ended_at": None,
                "stages": records, "warnings": ["synthetic run written by bench/scale.py"]}
    atomic_write_json(path / "manifest.json", manifest)
    return path


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a process may exit while we look
            total += p.memory_info().rss
    return total


def run_measured(command: list[str], cwd: Path) -> tuple[float, int, int, float]:
    """(wall seconds, peak RSS of the whole process tree, exit code, CPU seconds of the tree:
    user + system of every process it started and waited for). On a shared machine the CPU
    seconds move less with the load than the wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=_ENV)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
            while not done.is_set():
                peak = max(peak, tree_rss(root))
                time.sleep(0.02)
        except psutil.Error:
            pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return elapsed, peak, proc.returncode, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,3000000,10000000",
                        help="requests per arm, comma-separated")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="repeats per arm")
    parser.add_argument("--formats", default="html,pdf,md", help="report --formats")
    parser.add_argument("--keep", default=None, help="write the runs here and keep them")
    parser.add_argument("--verbs", default="compare,report", help="which commands to time")
    args = parser.parse_args()
    cli = [str(Path(sys.executable).parent / "loadproof")]
    print("SYNTHETIC runs (bench/scale.py writes them; no k6 involved): one open-model soak "
          f"stage at {RATE} req/s per arm, {args.repeats} repeat(s); load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    base_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lp-scale-"))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            store = base_dir / f"n{size}"
            if not (store / "optimized" / "manifest.json").is_file():
                shutil.rmtree(store, ignore_errors=True)
                t0 = time.perf_counter()
                write_arm(store, "baseline", size, args.repeats, 40.0, seed=1)
                write_arm(store, "optimized", size, args.repeats, 25.0, seed=2)
                print(f"{size:>12,} requests per arm: synthetic runs written in "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
            pair = [str(store / "baseline"), str(store / "optimized")]
            verbs = args.verbs.split(",")
            results: dict[str, list[tuple[float, int, int, float]]] = {v: [] for v in verbs}
            for round_ in range(args.rounds):
                if "compare" in verbs:
                    results["compare"].append(run_measured(
                        cli + ["compare", *pair, "--format", "json"], ROOT))
                if "report" not in verbs:
                    continue
                out = store / f"report-{round_}"
                shutil.rmtree(out, ignore_errors=True)
                results["report"].append(run_measured(
                    cli + ["report", *pair, "--out", str(out), "--formats", args.formats,
                           "--title", "synthetic soak"], ROOT))
            for verb, rows in results.items():
                failed = [r[2] for r in rows if r[2]]
                status = f"  FAILED (exit {failed[0]})" if failed else ""
                print(f"{size:>12,} requests per arm  {verb:<8} wall {median([r[0] for r in rows]):7.2f} s"
                      f"  CPU {median([r[3] for r in rows]):7.2f} s"
                      f"  peak {median([r[1] for r in rows]) / 2**20:8,.0f} MiB"
                      f"  (median of {len(rows)}, load average {os.getloadavg()[0]:.2f}){status}",
                      flush=True)
            html = store / "report-0" / "report.html"
            if html.is_file():
                print(f"{size:>12,} requests per arm  report.html {html.stat().st_size / 1024:,.0f} KiB",
                      flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
