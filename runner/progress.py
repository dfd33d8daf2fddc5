"""Progress display: one live line on a terminal, plain lines otherwise."""

from __future__ import annotations

import re
import sys
import time
from typing import TextIO

from .rawpipe import Follow


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
    """Follows k6's raw CSV as it grows (about once a second; plain, or gzipped and
    decompressed as it arrives, runner/rawpipe.py): an exact request count
    (a C-level substring count) and the error and 429 shares of the newest samples (one
    regular expression over the last part of each chunk). Cheap on purpose: the machine is
    busy generating load, and every cycle spent here is taken from k6 or the target."""

    SAMPLE_BYTES = 256 * 1024

    def __init__(self, path: str) -> None:
        self.path = path
        self.follow = Follow(path)
        self.partial = b""
        self.requests = 0
        self.recent = 0
        self.recent_errors = 0
        self.recent_rate_limited = 0
        self._pattern: re.Pattern[bytes] | None = None

    def poll(self) -> None:
        chunk = self.follow.read()
        if not chunk:
            return
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
        self.requests += data.count(b"\nhttp_req_duration,") + data.startswith(
            b"http_req_duration,")
        sample = data[-self.SAMPLE_BYTES:]
        sample = sample[sample.find(b"\n") + 1:] if len(data) > self.SAMPLE_BYTES else sample
        statuses = self._pattern.findall(sample)
        if statuses:
            self.recent = len(statuses)
            self.recent_rate_limited = sum(1 for st in statuses if st == b"429")
            self.recent_errors = sum(1 for st in statuses
                                     if st != b"429" and not st.startswith(b"2"))

    @property
    def recent_error_share(self) -> float:
        return self.recent_errors / self.recent if self.recent else 0.0

    @property
    def recent_rate_limited_share(self) -> float:
        return self.recent_rate_limited / self.recent if self.recent else 0.0


class CellProgress(Progress):
    """Progress in a Jupyter cell: one output redrawn in place (an IPython display handle)
    holding the lasting lines and, under them, the live status of the running stage. Redraws
    are throttled; the kernel's messages cost the machine little while k6 runs."""

    KEEP_LINES = 40

    def __init__(self, *, every_s: float = 1.0) -> None:
        super().__init__(quiet=False, live=True, stream=sys.stderr)
        from IPython.display import HTML, display

        self._html = HTML
        self.every_s = every_s
        self.lines: list[str] = []
        self.current = ""
        self._drawn = 0.0
        self.handle = display(self._render(), display_id=True)

    def _render(self) -> object:
        import html

        shown = self.lines[-self.KEEP_LINES:]
        body = html.escape("\n".join(shown))
        if self.current:
            body += ("\n" if shown else "") + f"<b>{html.escape(self.current)}</b>"
        return self._html(f'<pre class="lp-progress">{body or "starting…"}</pre>')

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        if self.handle is not None:
            self.handle.update(self._render())

    def line(self, text: str) -> None:
        self.lines.append(text)
        self.current = ""
        self._draw()

    def status(self, text: str, *, every_s: float = 5.0) -> None:
        self.current = text
        if time.monotonic() - self._drawn >= self.every_s:
            self._draw()

    def done(self) -> None:
        if self.current:
            self.current = ""
            self._draw()
