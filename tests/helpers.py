"""Test helpers: a tiny HTTP server on loopback, and synthetic runs for the comparison math."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import polars as pl
from loadproof.ingest import REQUEST_SCHEMA
from loadproof.store import FORMAT_VERSION, Run, atomic_write_json


@contextmanager
def tiny_server(statuses: tuple[int, ...] = (200,)) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering with ``statuses`` in turn; yields its URL."""
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


Samples = tuple[list[float], list[int]]  # durations_ms, statuses


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
    repeat 1, repeat 2, ...]). Requests are spread evenly over each stage's duration."""
    path = root / label
    records = []
    repeats = max(len(per_repeat) for _, per_repeat in stages.values())
    for index, (key, (level, per_repeat)) in enumerate(stages.items(), start=1):
        for repeat, (durations, statuses) in enumerate(per_repeat, start=1):
            folder = f"r{repeat}-{key}"
            n = len(durations)
            start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=repeat, minutes=index)
            offsets = np.linspace(0, duration_s * 1e6, n, endpoint=False).astype(np.int64)
            frame = pl.DataFrame({
                "timestamp": [start + timedelta(microseconds=int(o)) for o in offsets],
                "duration_ms": np.asarray(durations, dtype=float),
                "status": statuses, "expected": [200 <= s < 400 for s in statuses],
                "name": ["GET /"] * n, "method": ["GET"] * n, "error_code": [0] * n,
                "stage": [key] * n, "repeat": [repeat] * n,
            }).cast(dict(REQUEST_SCHEMA))  # type: ignore[arg-type]
            (path / "stages" / folder).mkdir(parents=True)
            frame.write_parquet(path / "stages" / folder / "requests.parquet")
            records.append({"dir": folder, "key": key, "index": index, "repeat": repeat,
                            "level": level, "model": model, "duration_s": duration_s,
                            "warmup_s": 0.0, "status": "complete", "requests": n,
                            "dropped_iterations": dropped,
                            "requests_file": f"stages/{folder}/requests.parquet"})
    levels = [v[0] for v in stages.values()]
    manifest = {"format_version": FORMAT_VERSION, "run_id": f"run-{label}", "label": label,
                "status": status, "status_reason": None, "target": "http://127.0.0.1:1",
                "profile": None, "plan": {"model": model, "levels": levels,
                                          "duration_s": duration_s, "warmup_s": 0.0,
                                          "repeat": repeats},
                "script": None, "k6": {"version": "v1.1.0"}, "commit_info": None,
                "machine_info": {}, "started_at": None, "ended_at": None, "stages": records}
    atomic_write_json(path / "manifest.json", manifest)
    return Run(path, manifest)
