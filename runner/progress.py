"""Progress display: one live line on a terminal, plain lines otherwise."""

from __future__ import annotations

import re
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
    """Counts requests and errors as k6 appends to its raw CSV (k6 flushes about every second).

    One regular expression over each new chunk (no per-line Python work), so following a
    stage of thousands of requests/s costs the machine next to nothing."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.requests = 0
        self.errors = 0
        self.rate_limited = 0
        self._pattern: re.Pattern[bytes] | None = None

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        self.offset += len(chunk)
        data = self.partial + chunk
        cut = data.rfind(b"\n") + 1
        self.partial, data = data[cut:], data[:cut]
        if self._pattern is None:
            end = data.find(b"\n")
            if end < 0:
                self.partial = data + self.partial
                return
            header = data[:end].split(b",")
            if b"status" not in header:
                return
            skip = header.index(b"status") - 1  # fields between metric_name and status
            self._pattern = re.compile(
                rb"^http_req_duration,(?:[^,\n]*,){%d}([^,\n]*)" % skip, re.MULTILINE)
            data = data[end + 1:]
        statuses = self._pattern.findall(data)
        self.requests += len(statuses)
        for status in statuses:
            if status == b"429":
                self.rate_limited += 1
            elif not status.startswith(b"2"):
                self.errors += 1
