"""The cost of splitting a stage over k6 generators: `loadproof run --generators 2` against
`--generators 1` at the same total arrival rate, on a loopback target that is not CPU-bound
(a threaded server that answers each request after a fixed sleep, so its latency is the sleep,
not a queue for the CPU).

Each round runs N=1 and N=2 back to back, in an order that reverses every round; the figures
are the medians over rounds of the achieved throughput (requests / measured window, from
requests.parquet) and the p95 of all requests, and the median of the per-round ratios N=2 / N=1.
The server's own request count is checked against the stored rows every time.

    python bench/generators.py [--rate 150] [--duration 5] [--rounds 5] [--delay-ms 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from loadproof.execute import run_stages  # noqa: E402
from loadproof.metrics import stage_metrics  # noqa: E402
from loadproof.plan import make_plan  # noqa: E402
from loadproof.progress import Progress  # noqa: E402

from bench._common import figure, median  # noqa: E402


@contextmanager
def counting_server(delay_s: float = 0.0) -> Iterator[tuple[str, list[int]]]:
    """An HTTP server on 127.0.0.1 answering GET with 200 after ``delay_s``, counting the
    requests k6 sent (by user agent: the runner's preflight check is not load); yields its URL
    and the one-element count."""
    count = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            if delay_s:
                time.sleep(delay_s)
            body = b"ok"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if "k6" in (self.headers.get("user-agent") or ""):
                with lock:
                    count[0] += 1

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", count
    finally:
        server.shutdown()
        server.server_close()


def one(url: str, served: list[int], generators: int, rate: int, duration: int,
        out: Path) -> tuple[float, float]:
    before = served[0]
    run = run_stages(make_plan(str(rate), model="rate", stage_duration=f"{duration}s"),
                     label=f"n{generators}", target=url, script="quick", out_dir=out,
                     progress=Progress(quiet=True), generators=generators)
    metrics = stage_metrics(run)[0]
    record = run.stages[0]
    sent = served[0] - before
    if record["status"] != "complete" or metrics.requests != sent:
        raise SystemExit(f"N={generators}: stage {record['status']}, {metrics.requests} stored "
                         f"rows for {sent} requests served")
    assert metrics.throughput_rps is not None and metrics.latency_all.p95_ms is not None
    return metrics.throughput_rps, metrics.latency_all.p95_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=150, help="total arrival rate, req/s")
    parser.add_argument("--duration", type=int, default=5, help="measured seconds per stage")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--delay-ms", type=float, default=20.0,
                        help="the server's fixed answer time")
    args = parser.parse_args()
    results: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp, \
            counting_server(args.delay_ms / 1000) as (url, served):
        for number in range(args.rounds):
            order = (1, 2) if number % 2 == 0 else (2, 1)
            for generators in order:
                results[generators].append(one(url, served, generators, args.rate,
                                               args.duration, Path(tmp)))
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores; "
          f"{args.rounds} rounds of {args.duration} s at {args.rate} req/s, server answers "
          f"after {args.delay_ms:g} ms")
    for generators in (1, 2):
        figure(f"N={generators} throughput (median)",
               median([r for r, _ in results[generators]]), "req/s")
        figure(f"N={generators} p95 of all requests (median)",
               median([p for _, p in results[generators]]), "ms")
    rate_ratio = median([b[0] / a[0] for a, b in zip(results[1], results[2], strict=True)])
    p95_ratio = median([b[1] / a[1] for a, b in zip(results[1], results[2], strict=True)])
    figure("throughput N=2 / N=1 (median of rounds)", rate_ratio, "x", "within 5%",
           abs(rate_ratio - 1) <= 0.05)
    figure("p95 N=2 / N=1 (median of rounds)", p95_ratio, "x", "within 5%",
           abs(p95_ratio - 1) <= 0.05)


if __name__ == "__main__":
    main()
