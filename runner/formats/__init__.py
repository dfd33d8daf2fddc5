"""Importers for load-test outputs not made by k6, each told apart by its content.

Every format is one module with the same small interface (:class:`Format`): ``detect`` reads
the first line of a file, ``convert`` writes a ``requests.parquet`` with
:data:`loadproof.ingest.REQUEST_SCHEMA` (per-request formats) or ``summarise`` turns the file's
own aggregates into a summary-only stage (formats that keep no per-request rows). The k6
outputs stay in :mod:`loadproof.ingest`; :func:`detect` is what its ``sniff`` asks last."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from . import gatling, hey, jmeter, locust, vegeta
from .base import Converted

__all__ = ["FORMATS", "PER_REQUEST_KINDS", "RATE_KINDS", "Converted", "convert", "described", "detect"]


class Format(Protocol):
    KIND: str  # the kind recorded in the manifest's imported_from
    DESCRIPTION: str  # how a user makes such a file, for error messages
    PER_REQUEST: bool

    def detect(self, first_line: str) -> bool: ...


FORMATS: tuple[Any, ...] = (jmeter, hey, vegeta, gatling, locust.Stats, locust.History)
BY_KIND = {f.KIND: f for f in FORMATS}
PER_REQUEST_KINDS = tuple(f.KIND for f in FORMATS if f.PER_REQUEST)
SUMMARY_KINDS = tuple(f.KIND for f in FORMATS if not f.PER_REQUEST)
# tools that send at a set rate (an open model): --stages names requests per second
RATE_KINDS = tuple(f.KIND for f in FORMATS if getattr(f, "OPEN_MODEL", False))


def detect(path: Path, head: str) -> str | None:
    """The kind of a non-k6 file from its first line, or None; raises ImportFormatError for a
    file of a known tool in a shape loadproof does not read (a JTL in XML, say)."""
    first_line = head.lstrip("\ufeff").split("\n", 1)[0].rstrip("\r")
    for fmt in FORMATS:
        if fmt.detect(first_line):
            return str(fmt.KIND)
    for fmt in FORMATS:
        refuse = getattr(fmt, "refuse", None)
        if refuse is not None:
            refuse(path, head)
    return None


def convert(kind: str, path: Path, out: Path, *, repeat: int, stage: str,
            stage_by: str | None = None) -> Converted:
    """Write ``out`` (requests.parquet) from a per-request file of ``kind``; ``stage_by``
    (JMeter only) splits it into stages by a thread-count column."""
    fmt = BY_KIND[kind]
    options = {"stage_by": stage_by} if stage_by else {}
    result: Converted = fmt.convert(path, out, repeat=repeat, stage=stage, **options)
    return result


def described() -> str:
    return "; ".join(f.DESCRIPTION for f in FORMATS)
