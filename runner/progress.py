"""Progress display: one live line on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None,
                 quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.quiet = quiet
        self._last_plain = 0.0
        self._dirty = False

    def line(self, text: str) -> None:
        """A lasting line (stage started, stage finished, step done)."""
        if self.quiet:
            return
        if self._dirty:
            self.stream.write("\r\x1b[2K")
            self._dirty = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def status(self, text: str, *, every_s: float = 5.0) -> None:
        """A transient status: redrawn in place on a terminal, throttled otherwise."""
        if self.quiet:
            return
        if self.live:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self._dirty = True
        elif time.monotonic() - self._last_plain >= every_s:
            self._last_plain = time.monotonic()
            self.stream.write(text + "\n")
            self.stream.flush()

    def done(self) -> None:
        if self._dirty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._dirty = False


class CsvTail:
    """Counts requests and errors as k6 appends to its raw CSV (k6 flushes about every second)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.requests = 0
        self.errors = 0
        self.rate_limited = 0
        self._status_index: int | None = None

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        self.offset += len(chunk)
        data = self.partial + chunk
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            if self._status_index is None and raw.startswith(b"metric_name,"):
                self._status_index = raw.split(b",").index(b"status")
                continue
            if not raw.startswith(b"http_req_duration,") or self._status_index is None:
                continue
            fields = raw.split(b",")
            if len(fields) <= self._status_index:
                continue
            self.requests += 1
            status = fields[self._status_index]
            if status == b"429":
                self.rate_limited += 1
            elif not status.startswith(b"2"):
                self.errors += 1
