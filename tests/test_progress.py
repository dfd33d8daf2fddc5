import io
from pathlib import Path

from loadproof.progress import CsvTail, Progress

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
    assert tail.requests == 122
    assert 0.1 < tail.recent_error_share < 0.3 and 0.1 < tail.recent_rate_limited_share < 0.3


def test_csv_tail_counts_a_large_chunk_exactly(tmp_path: Path) -> None:
    raw = (DATA / "raw.csv").read_bytes()
    header, body = raw.split(b"\n", 1)
    target = tmp_path / "raw.csv"
    target.write_bytes(header + b"\n" + body * 200)  # ~38 MB, beyond the sampled window
    tail = CsvTail(str(target))
    tail.poll()
    assert tail.requests == 122 * 200
    assert tail.recent > 0 and abs(tail.recent_error_share - 24 / 122) < 0.05


def test_progress_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream, live=False)
    progress.line("stage 1 started")
    progress.status("5 req/s")
    progress.status("6 req/s")  # throttled: plain output does not repeat every redraw
    assert stream.getvalue() == "stage 1 started\n5 req/s\n"
