"""Importing a JMeter JTL: loadproof's converter against a bare polars read-filter-write of the
same file, in process time (user + system CPU of a fresh child process, start-up included for
both), measured in the same run, interleaved.

    python bench/jtl_import_speed.py [--rows 1000000] [--rounds 3]

The JTL is built from a real JMeter output (tests/data/other_tools/jmeter.jtl), its rows
repeated with shifted timestamps until it has the requested number of rows.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import figure, median  # noqa: E402

SOURCE = Path(__file__).resolve().parent.parent / "tests" / "data" / "other_tools" / "jmeter.jtl"

BARE = """
import polars as pl, sys
(pl.scan_csv(sys.argv[1], infer_schema=False)
   .filter(pl.col("label").is_not_null())
   .sink_parquet(sys.argv[2], compression="zstd"))
"""
# the same, keeping only the columns the importer reads: the fairer floor
BARE_COLUMNS = """
import polars as pl, sys
(pl.scan_csv(sys.argv[1], infer_schema=False)
   .select("timeStamp", "elapsed", "label", "responseCode", "success")
   .filter(pl.col("label").is_not_null())
   .sink_parquet(sys.argv[2], compression="zstd"))
"""
OURS = """
import sys
from pathlib import Path
from loadproof.formats import convert
convert("jmeter-jtl", Path(sys.argv[1]), Path(sys.argv[2]), repeat=1, stage="imported")
"""


def build_jtl(path: Path, rows: int) -> None:
    lines = SOURCE.read_text().splitlines()
    header, body = lines[0], lines[1:]
    span = int(body[-1].split(",", 1)[0]) - int(body[0].split(",", 1)[0]) + 1000
    written = 0
    with open(path, "w") as out:
        out.write(header + "\n")
        shift = 0
        while written < rows:
            chunk = []
            for line in body[: rows - written]:
                ts, rest = line.split(",", 1)
                chunk.append(f"{int(ts) + shift},{rest}\n")
            out.write("".join(chunk))
            written += len(chunk)
            shift += span


def cpu_seconds(code: str, jtl: Path, out: Path) -> float:
    """User + system CPU seconds of one conversion in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-c", code, str(jtl), str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        jtl = Path(tmp) / "results.jtl"
        build_jtl(jtl, args.rows)
        print(f"{args.rows:,} JTL rows, {jtl.stat().st_size / 1e6:,.0f} MB", flush=True)
        bare_times, columns_times, ours_times = [], [], []
        for round_ in range(args.rounds):  # interleaved, so drift hits both alike
            bare_times.append(cpu_seconds(BARE, jtl, Path(tmp) / f"bare{round_}.parquet"))
            columns_times.append(cpu_seconds(BARE_COLUMNS, jtl, Path(tmp) / f"col{round_}.pq"))
            ours_times.append(cpu_seconds(OURS, jtl, Path(tmp) / f"ours{round_}.parquet"))
        bare, ours = median(bare_times), median(ours_times)
        figure("bare polars read-filter-write, median process time", bare, "s")
        figure("bare polars, the importer's 5 columns only, median", median(columns_times), "s")
        figure("loadproof JTL import, median process time", ours, "s")
        figure("ratio loadproof / bare polars", ours / bare, "x", "<= 1.25", ours / bare <= 1.25)
        figure("ratio loadproof / bare polars of the same 5 columns",
               ours / median(columns_times), "x")


if __name__ == "__main__":
    main()
