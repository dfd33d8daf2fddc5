"""Shared by the benchmark scripts: medians and a plain figure printer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median(values: list[float]) -> float:
    return statistics.median(values)


def figure(name: str, value: float, unit: str, target: str = "", ok: bool | None = None) -> None:
    verdict = "" if ok is None else ("  [meets target]" if ok else "  [MISSES target]")
    extra = f"  (target {target})" if target else ""
    print(f"{name:<58} {value:>12,.3f} {unit}{extra}{verdict}", flush=True)
