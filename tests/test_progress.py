import io
from pathlib import Path

from runner.progress import CsvTail, Progress

from .conftest import DATA


def test_csv_tail_counts_across_partial_writes(tmp_path: Path) -> None:
    raw = (DATA / "raw.csv").read_bytes()
    target = tmp_path / "raw.csv"
    tail = CsvTail(str(target))
    tail.poll()  # no file yet
    cut1, cut2 = 37, len(raw) // 2 + 11  # inside the header, then inside a data line
    for start, end in ((0, cut1), (cut1, cut2), (cut2, len(raw))):
        with open(target, "ab") as handle:
            handle.write(raw[start:end])
        tail.poll()
    # 122 requests (warm-up included), statuses cycling 200, 200, 200, 429, 500
    assert (tail.requests, tail.rate_limited, tail.errors) == (122, 24, 24)


def test_progress_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream, live=False)
    progress.line("stage 1 started")
    progress.status("5 req/s")
    progress.status("6 req/s")  # throttled: plain output does not repeat every redraw
    assert stream.getvalue() == "stage 1 started\n5 req/s\n"
