"""Load shedding (token bucket) and a circuit breaker around the database."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class TokenBucket:
    """Admit ``rate`` requests/s on average with bursts up to ``burst``; single event loop only."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self.rejected_total = 0

    def try_acquire(self) -> float:
        """Take a token: 0.0 when admitted, else the seconds until one is available."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        self.rejected_total += 1
        return (1.0 - self._tokens) / self.rate

    @property
    def tokens(self) -> float:
        return self._tokens


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(Exception):
    """The breaker is open: the database is presumed down, fail fast."""


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``reset_timeout_s`` one probe
    is let through (half-open); its success closes the breaker, its failure re-opens it."""

    def __init__(self, threshold: int, reset_timeout_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 on_transition: Callable[[BreakerState, BreakerState], None] | None = None) -> None:
        self.threshold = threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_transition = on_transition
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    def _move(self, new: BreakerState) -> None:
        if new is not self.state:
            old, self.state = self.state, new
            if self._on_transition:
                self._on_transition(old, new)

    def before_call(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go to the database now."""
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.reset_timeout_s:
                raise CircuitOpen()
            self._move(BreakerState.HALF_OPEN)
            self._probe_in_flight = False
        if self.state is BreakerState.HALF_OPEN:
            if self._probe_in_flight:
                raise CircuitOpen()
            self._probe_in_flight = True

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self._probe_in_flight = False
        self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        self._probe_in_flight = False
        if self.state is BreakerState.HALF_OPEN or self.consecutive_failures >= self.threshold:
            self._opened_at = self._clock()
            self._move(BreakerState.OPEN)

    def release_probe(self) -> None:
        """A probe that ended neither in success nor failure (client error) frees the slot."""
        self._probe_in_flight = False
