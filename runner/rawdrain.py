"""The process that reads k6's plain CSV from a named pipe and writes it gzipped, flushed after
each of k6's writes so that a reader decompressing the growing file sees every sample k6 has
written (runner/rawpipe.py starts it and explains why).

    python -I -S runner/rawdrain.py FIFO OUT.csv.gz   (as runner/rawpipe.py starts it)

A process of its own, not a thread of loadproof's: were loadproof killed mid-stage, k6 (which
runs on to its stage's end) would block on a pipe nobody reads and never exit; this process
reads on until k6 is gone, ends the gzip stream and exits. It ignores Ctrl-C (loadproof stops
k6, and this drains what k6 writes while stopping). It keeps reading when writing the file
fails, so k6 never blocks, and then exits 1 with the error on stderr. Standard library only:
it starts in a few milliseconds."""

from __future__ import annotations

import os
import select
import signal
import sys
import time
import zlib

LEVEL = 1  # zlib's fastest: the CPU is k6's and the target's (bench/raw_output.py)
FLUSH_IDLE_S = 0.2  # a sync flush once k6's write burst has been quiet this long
FLUSH_EVERY_S = 1.0  # and at least this often while k6 writes without a pause
ORPHAN_WAIT_S = 60.0  # loadproof gone and no k6 ever wrote: give up after this long
READ_BYTES = 1 << 20


class Output:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.error: OSError | None = None

    def write(self, data: bytes) -> None:
        if self.error is not None or not data:
            return
        try:
            if self.fd is None:  # created with the first data: no output, no file
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            self.error = exc

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def drain(fifo: str, out_path: str) -> int:
    parent = os.getppid()
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # does not wait for a writer
    out = Output(out_path)
    deflate = zlib.compressobj(LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    seen = 0
    pending = False
    flushed = time.monotonic()
    orphaned_at: float | None = None
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], FLUSH_IDLE_S)
            chunk = b""
            if ready:
                try:
                    chunk = os.read(fd, READ_BYTES)
                except BlockingIOError:
                    chunk = b""
                if not chunk:
                    break  # every writer has closed the pipe: k6 is gone (or never came)
                seen += len(chunk)
                out.write(deflate.compress(chunk))
                pending = True
                if time.monotonic() - flushed < FLUSH_EVERY_S:
                    continue
            if pending:
                out.write(deflate.flush(zlib.Z_SYNC_FLUSH))
                pending = False
                flushed = time.monotonic()
            if not ready and seen == 0 and os.getppid() != parent:
                orphaned_at = orphaned_at or time.monotonic()
                if time.monotonic() - orphaned_at > ORPHAN_WAIT_S:
                    break
    finally:
        if seen:
            out.write(deflate.flush(zlib.Z_FINISH))
        out.close()
        os.close(fd)
    if out.error is not None:
        print(f"{out_path}: could not write k6's raw output ({out.error})", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fifo, out_path = sys.argv[1:3]
    sys.exit(drain(fifo, out_path))


if __name__ == "__main__":
    main()
