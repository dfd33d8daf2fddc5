"""Report speed: from stored runs (the shipped samples) to every report file (HTML, PDF,
Markdown, achievement, executed notebook), median of --rounds.

    python bench/report_speed.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from loadproof.progress import Progress  # noqa: E402
from loadproof.report import make_report  # noqa: E402
from loadproof.store import load_run  # noqa: E402

from bench._common import figure, median, timed  # noqa: E402

SAMPLE = ROOT / "data" / "sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    probe = (load_run(SAMPLE / "probe-baseline"), load_run(SAMPLE / "probe-optimized"))
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            elapsed, _ = timed(lambda i=i: make_report(
                SAMPLE / "baseline", SAMPLE / "optimized", out_dir=Path(tmp) / str(i),
                reports_dir=Path(tmp), probe=probe, title="bench",
                progress=Progress(quiet=True)))
            times.append(elapsed)
    figure(f"stored runs -> all report files, median of {args.rounds}", median(times), "s",
           "<= 15", median(times) <= 15)


if __name__ == "__main__":
    main()
