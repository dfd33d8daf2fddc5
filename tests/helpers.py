"""Test helpers: a tiny HTTP server on loopback, and synthetic runs for the comparison math."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from loadproof.calibration import Samples, write_run
from loadproof.store import Run


@contextmanager
def tiny_server(statuses: tuple[int, ...] = (200,), delay_s: float = 0.0) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering with ``statuses`` in turn (after ``delay_s``);
    yields its URL."""
    cycle = itertools.cycle(statuses)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            with lock:
                status = next(cycle)
            if delay_s:
                time.sleep(delay_s)
            body = b'{"ok": true}'
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _answer  # noqa: N815
        do_POST = _answer  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def make_run(root: Path, label: str, stages: dict[str, tuple[int, list[float], list[int]]], *,
             model: str = "vus", duration_s: float = 10.0, status: str = "complete",
             repeats: int = 1, dropped: int = 0) -> Run:
    """A stored run from explicit samples: stage key -> (level, durations_ms, statuses).
    With ``repeats`` > 1 the same samples are written once per repeat."""
    return make_repeated_run(root, label, {key: (level, [(durations, statuses)] * repeats)
                                           for key, (level, durations, statuses) in stages.items()},
                             model=model, duration_s=duration_s, status=status, dropped=dropped)


def make_repeated_run(root: Path, label: str, stages: dict[str, tuple[int, list[Samples]]], *,
                      model: str = "vus", duration_s: float = 10.0, status: str = "complete",
                      dropped: int = 0) -> Run:
    """A stored run whose repeats have their own samples: stage key -> (level, [samples of
    repeat 1, repeat 2, ...])."""
    return write_run(root, label, stages, model=model, duration_s=duration_s, status=status,
                     dropped=dropped)
