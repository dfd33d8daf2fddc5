"""The k6 scripts shipped with loadproof, and user scripts given by path."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import UsageError

SCRIPTS_DIR = Path(__file__).parent / "k6"


def shipped_scripts() -> list[str]:
    return sorted(p.stem for p in SCRIPTS_DIR.glob("*.js"))


def resolve_script(name_or_path: str | Path) -> Path:
    """A shipped script's name (quick, journey, submit) or a path to a .js file."""
    text = str(name_or_path)
    named = SCRIPTS_DIR / f"{text}.js"
    if "/" not in text and not text.endswith(".js") and named.is_file():
        return named
    path = Path(text)
    if path.is_file():
        return path.resolve()
    raise UsageError(f"--script {text!r}: no such file and not a shipped script "
                     f"(shipped: {', '.join(shipped_scripts())})")


def is_shipped(path: Path) -> bool:
    return path.resolve().parent == SCRIPTS_DIR.resolve()


def lib_sha256() -> str:
    """One hash over the shared library the shipped scripts import (runner/k6/lib)."""
    digest = hashlib.sha256()
    for lib in sorted((SCRIPTS_DIR / "lib").glob("*.js")):
        digest.update(lib.name.encode() + b"\0" + lib.read_bytes())
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
