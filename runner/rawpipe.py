"""k6's per-request output while a stage runs, and how it is followed.

k6 writes about 1 KB of CSV per request (13 samples). By default (``csv.gz``) k6 writes its
plain CSV into a named pipe and a process (runner/rawdrain.py) compresses it into
``raw.csv.gz``, flushing the compressed stream (zlib's sync flush) after each of k6's writes,
about once a second: the
file on disk is a few percent of the plain CSV, and a reader that decompresses as the file
grows sees every sample k6 has written so far. k6's own gzip output (an output file name
ending in ``.gz``) is not used: it never flushes its deflate stream before the test ends, so
the file stays a bare gzip header until about 20 KB of compressed data has piled up (at 20
requests/s, a whole 12-second stage), and the progress line and the capacity search's early
stop would see nothing. ``csv`` keeps k6 writing its plain CSV to ``raw.csv`` directly.

That process never stops reading while k6 runs, even when writing the file fails (the error
is raised when the stage ends): k6 blocks on a full pipe, and a blocked k6 would stop sending
load. polars scans the finished ``raw.csv.gz`` as it scans a plain CSV (it decompresses as it
reads), so every reader after the stage reads either file."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import TracebackType

from .errors import UsageError

RAW_OUTPUTS = {"csv.gz": "raw.csv.gz", "csv": "raw.csv"}  # --raw-output -> file in the stage
DEFAULT_RAW_OUTPUT = "csv.gz"
FIFO_NAME = ".raw.csv.fifo"
STOP_WAIT_S = 60.0  # for the rest of the pipe once k6 has exited
_GZIP_MAGIC = b"\x1f\x8b"


def check_raw_output(value: str, *, flag: str = "--raw-output") -> str:
    if value not in RAW_OUTPUTS:
        raise UsageError(f"{flag} {value!r}: expected one of {', '.join(RAW_OUTPUTS)}")
    return value


def raw_file(folder: Path, mode: str) -> Path:
    """Where a stage's (or a generator's) raw k6 output lands in ``folder``."""
    return folder / RAW_OUTPUTS[mode]


def find_raw(folder: Path) -> Path | None:
    """The raw k6 output kept in ``folder``, whichever mode wrote it."""
    for name in RAW_OUTPUTS.values():
        if (folder / name).is_file():
            return folder / name
    return None


def k6_target(raw: Path) -> Path:
    """The file k6 is told to write (``--out csv=...``) for the raw output ``raw``: the pipe
    beside it when the output is compressed here."""
    return raw.parent / FIFO_NAME if raw.name.endswith(".gz") else raw


class RawSink:
    """Compresses what k6 writes into the pipe to ``raw`` (a no-op for a plain ``raw.csv``,
    which k6 writes itself), in a process of its own (runner/rawdrain.py). ``start()`` before
    k6 starts; ``stop()`` once k6 has exited (the rest of the pipe is read and the gzip stream
    ended). Used as a context manager, the way out stops it too, removes the pipe and raises
    the error writing the file met, if any."""

    def __init__(self, raw: Path) -> None:
        self.raw = raw
        self.enabled = raw.name.endswith(".gz")
        self.fifo = k6_target(raw)
        self.error: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RawSink:
        if not self.enabled:
            return self
        self.fifo.unlink(missing_ok=True)
        os.mkfifo(self.fifo, 0o600)
        # its own session: the terminal's Ctrl-C goes to loadproof, which stops k6; this
        # process reads on until k6 is gone
        # the script by its path, without site-packages (-I -S): standard library only, it
        # starts in a few milliseconds of CPU
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(Path(__file__).with_name("rawdrain.py")),
             str(self.fifo), str(self.raw)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        return self

    def stop(self) -> None:
        """Call once k6 has exited (again is harmless)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            deadline = time.monotonic() + STOP_WAIT_S
            while proc.poll() is None and time.monotonic() < deadline:
                # a writer that opens and closes: the drain ends even when k6 never opened
                # the pipe (or closed it before the drain had opened its end)
                with contextlib.suppress(OSError):
                    os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.2)
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
            if proc.returncode:
                self.error = (err.decode(errors="replace").strip()
                              or f"the raw-output process exited {proc.returncode}")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            self.fifo.unlink(missing_ok=True)

    def finish(self) -> None:
        """:meth:`stop`, then the error writing the file met, if any."""
        self.stop()
        if self.error is not None:
            raise OSError(f"{self.raw}: could not write k6's raw output ({self.error})")

    def __enter__(self) -> RawSink:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.finish()
        else:  # the exception on its way out is the one to see
            self.stop()


class Follow:
    """The bytes appended to a growing raw output since the last call, plain or gzipped
    (decompressed as they arrive; a sync-flushed stream decompresses up to its last flush)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.offset = 0
        self._head = b""
        self._inflate: zlib._Decompress | None = None
        self._plain: bool | None = None

    def read(self) -> bytes:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return b""
        self.offset += len(chunk)
        if self._plain is None:
            self._head += chunk
            if len(self._head) < 2:
                return b""
            chunk, self._head = self._head, b""
            self._plain = not chunk.startswith(_GZIP_MAGIC)
            if not self._plain:
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._plain:
            return chunk
        assert self._inflate is not None
        if self._inflate.eof:
            return b""
        try:
            return self._inflate.decompress(chunk)
        except zlib.error:
            return b""  # a damaged stream shows nothing more live; the stage's end reads it
