"""Ingest: k6 raw CSV -> requests.parquet, against a bare polars scan-filter-write of the same
file, measured in the same run; rows/s; peak memory of each in its own process.

    python bench/ingest_speed.py [--size-mb 2048] [--rounds 3]

The CSV is built from a real recorded k6 CSV (tests/data/raw.csv), its rows repeated with
shifted timestamps until the file reaches the requested size.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import figure, median  # noqa: E402

SOURCE = Path(__file__).resolve().parent.parent / "tests" / "data" / "raw.csv"

BARE = """
import polars as pl, sys
(pl.scan_csv(sys.argv[1], infer_schema=False)
   .filter(pl.col("metric_name") == "http_req_duration")
   .sink_parquet(sys.argv[2], compression="zstd"))
"""
OURS = """
import sys
from pathlib import Path
from loadproof.ingest import csv_to_parquet
csv_to_parquet(Path(sys.argv[1]), Path(sys.argv[2]), stage="s1-1000rps", repeat=1)
"""


def build_csv(path: Path, size_bytes: int) -> int:
    lines = SOURCE.read_text().splitlines()
    header, body = lines[0], lines[1:]
    rows = 0
    shift = 0
    with open(path, "w") as out:
        out.write(header + "\n")
        written = len(header) + 1
        while written < size_bytes:
            chunk = []
            for line in body:
                name, ts, rest = line.split(",", 2)
                chunk.append(f"{name},{int(ts) + shift},{rest}\n")
            block = "".join(chunk) * 50
            out.write(block)
            written += len(block)
            rows += len(body) * 50
            shift += 10_000_000
    return rows


def run_child(code: str, csv: Path, out: Path) -> float:
    """Wall seconds of one conversion in a fresh process (start-up included for both)."""
    import time

    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(csv), str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return time.perf_counter() - started


def peak_alone(code: str, csv: Path, out: Path) -> float:
    script = ("import resource, sys\n" + code +
              "\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(csv), str(out)],
                          capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        csv = Path(tmp) / "raw.csv"
        print(f"building a {args.size_mb} MB k6 CSV from {SOURCE.name} ...", flush=True)
        rows = build_csv(csv, args.size_mb * 1024 * 1024)
        print(f"{rows:,} CSV rows, {csv.stat().st_size / 1e6:,.0f} MB", flush=True)
        bare_times, ours_times = [], []
        for round_ in range(args.rounds):  # interleaved, so drift hits both alike
            bare_times.append(run_child(BARE, csv, Path(tmp) / f"bare{round_}.parquet"))
            ours_times.append(run_child(OURS, csv, Path(tmp) / f"ours{round_}.parquet"))
        bare, ours = median(bare_times), median(ours_times)
        figure("bare polars scan-filter-write, median", bare, "s")
        figure("loadproof csv_to_parquet, median", ours, "s")
        figure("ratio loadproof / bare polars", ours / bare, "x", "<= 1.25", ours / bare <= 1.25)
        figure("loadproof CSV rows per second", rows / ours / 1e6, "M rows/s", ">= 2.5",
               rows / ours >= 2.5e6)
        peak = peak_alone(OURS, csv, Path(tmp) / "mem.parquet")
        figure(f"loadproof peak memory, {args.size_mb} MB CSV", peak, "MB", "< 500", peak < 500)
        figure("bare polars peak memory", peak_alone(BARE, csv, Path(tmp) / "memb.parquet"), "MB")


if __name__ == "__main__":
    main()
