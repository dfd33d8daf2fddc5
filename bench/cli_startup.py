"""CLI start-up: `loadproof --help` wall time, and `loadproof import` of a big k6 CSV against a
bare polars scan-filter-write of the same file, each end to end as a fresh process.

    python bench/cli_startup.py [--size-mb 400] [--rounds 5]

The CSV is built from a real recorded k6 CSV (tests/data/raw.csv), its rows repeated with
shifted timestamps until the file reaches the requested size (400 MB is about 3.5 M rows), in
a temporary folder that is deleted afterwards. A small real CSV is timed first the same way,
where start-up, not the work, dominates.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import figure, median  # noqa: E402
from bench.ingest_speed import BARE, SOURCE, build_csv  # noqa: E402

LOADPROOF = Path(sys.executable).parent / "loadproof"


def wall(cmd: list[str]) -> float:
    """Wall seconds of one process, start-up included; a failure stops the bench."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not LOADPROOF.is_file():
        raise SystemExit(f"{LOADPROOF} not found: run 'make install' and use .venv/bin/python")

    wall([str(LOADPROOF), "--help"])  # warm the file cache once, as a user's second call
    helps = [wall([str(LOADPROOF), "--help"]) for _ in range(args.rounds)]
    figure(f"loadproof --help, median of {args.rounds}", median(helps), "s", "<= 0.25",
           median(helps) <= 0.25)

    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        ratio(SOURCE, Path(tmp), args.rounds, f"{SOURCE.name} (start-up dominates)")
        csv = Path(tmp) / "raw.csv"
        print(f"building a {args.size_mb} MB k6 CSV ...", flush=True)
        rows = build_csv(csv, args.size_mb * 1024 * 1024)
        print(f"{rows:,} CSV rows, {csv.stat().st_size / 1e6:,.0f} MB", flush=True)
        ratio(csv, Path(tmp), args.rounds, f"{rows / 1e6:.1f} M-row CSV", target=True)


def ratio(csv: Path, tmp: Path, rounds: int, what: str, *, target: bool = False) -> None:
    """`loadproof import` of ``csv`` against a bare polars scan-filter-write of it."""
    bare_times, ours_times = [], []
    for round_ in range(rounds):  # interleaved, so drift hits both alike
        bare_times.append(wall([sys.executable, "-c", BARE, str(csv),
                                str(tmp / f"bare{round_}.parquet")]))
        ours_times.append(wall([str(LOADPROOF), "import", str(csv), "--label", "bench",
                                "--out", str(tmp / "runs")]))
    bare, ours = median(bare_times), median(ours_times)
    figure(f"{what}: bare polars, median of {rounds}", bare, "s")
    figure(f"{what}: loadproof import, median", ours, "s")
    if target:
        figure(f"{what}: ratio import / bare", ours / bare, "x", "<= 1.25",
               ours / bare <= 1.25)
    else:
        figure(f"{what}: ratio import / bare", ours / bare, "x")


if __name__ == "__main__":
    main()
