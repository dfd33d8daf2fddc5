"""Load shedding (an adaptive concurrency limit, a token bucket) and a circuit breaker around
the database."""

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


class AdaptiveLimit:
    """A concurrency limit that follows a delay the service observes (AIMD).

    At most ``limit`` requests are in flight; one more is refused (the caller answers 429).
    Samples of the watched delay (``observe``) -- the wait for a database bulkhead slot, or
    a request's whole latency -- are gathered in windows of at least ``window_s`` seconds and
    ``min_samples`` samples; at each window's end the limit is revised from the window's 90th
    percentile, in the manner of TCP congestion control and Netflix's concurrency-limits
    ``AIMDLimit``:

    - over ``target_s``: a queue is standing, multiply the limit by ``backoff``;
    - within it, and the window used at least half the limit: add ``increase``;
    - within it but the window used less: keep the limit (demand, not the service, was the
      bound, so the delay says nothing about a higher limit).

    Deciding once per window rather than on every sample, as ``AIMDLimit`` does, keeps one
    burst of slow answers from cutting the limit many times over before the cut can act.
    Below capacity the delay stays under the target and nothing is shed; above it the limit
    settles where admitted requests meet the target, and the rest are refused at once instead
    of queueing. Single event loop only (no locking).
    """

    def __init__(self, *, initial: int, min_limit: int, max_limit: int, target_s: float,
                 window_s: float, min_samples: int = 10, backoff: float = 0.9,
                 increase: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= min_limit <= initial <= max_limit:
            raise ValueError(f"need 1 <= min_limit ({min_limit}) <= initial ({initial}) "
                             f"<= max_limit ({max_limit})")
        if not 0 < backoff < 1:
            raise ValueError(f"backoff must be in (0, 1), not {backoff}")
        self.limit = float(initial)
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.target_s = target_s
        self.window_s = window_s
        self.min_samples = max(1, min_samples)
        self.backoff = backoff
        self.increase = increase
        self._clock = clock
        self.in_flight = 0
        self.shed_total = 0
        self.decreases = 0
        # the last closed window's 90th percentile of the watched delay (None: no window yet)
        self.last_window_p90_s: float | None = None
        self._window_start = clock()
        self._samples: list[float] = []
        self._peak_in_flight = 0

    def try_acquire(self) -> bool:
        """Take a slot: True when admitted (call :meth:`release` when done), False to shed."""
        if self.in_flight >= int(self.limit):
            self.shed_total += 1
            return False
        self.in_flight += 1
        if self.in_flight > self._peak_in_flight:
            self._peak_in_flight = self.in_flight
        return True

    def release(self) -> None:
        """An admitted request finished: its slot is free."""
        self.in_flight -= 1

    def observe(self, delay_s: float) -> None:
        """One sample of the watched delay; closes the window when it is long enough."""
        self._samples.append(delay_s)
        now = self._clock()
        if len(self._samples) >= self.min_samples and now - self._window_start >= self.window_s:
            self._revise()
            self._window_start = now
            self._samples.clear()
            self._peak_in_flight = self.in_flight

    def _revise(self) -> None:
        samples = sorted(self._samples)
        p90 = samples[min(len(samples) - 1, int(0.9 * len(samples)))]
        self.last_window_p90_s = p90
        if p90 > self.target_s:
            self.limit = max(float(self.min_limit), self.limit * self.backoff)
            self.decreases += 1
        elif self._peak_in_flight * 2 >= self.limit:
            self.limit = min(float(self.max_limit), self.limit + self.increase)


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
