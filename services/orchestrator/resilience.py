"""Load shedding (admission control on the database queue, a token bucket) and a circuit
breaker around the database."""

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
    """Admission control on the queue inside the service, counted in time.

    At most ``limit`` requests are admitted at once; one more is refused (the caller answers
    429 before any work). The limit is revised from each admitted request's time in the
    service, one sample per request as it ends (:meth:`observe`; any queue in the process,
    the event loop's, the bulkhead's or a group commit's, shows in it; the middleware samples
    the requests answered below 400 and the drops, not a quick 404, 422 or 503, which would
    hide a queue from the test below; the drops are no completions), in windows of at least
    ``window_s`` seconds and ``min_samples`` samples (the first sample after an idle spell
    opens a window):

    - **standing queue or not** (CoDel's test): a window is over the target when every
      request in it took longer than ``target_s``; the queue stands after
      ``standing_windows`` such windows in a row. A burst that drains within a window leaves
      some request with a short time and sheds nothing; one slow window (a pause of the host)
      is not yet a standing queue.
    - **while it stands**, the limit follows Little's law: ``slots`` plus what the service
      completes within ``max_wait_s`` at the rate measured in windows over the target
      (``slots + rate x max_wait_s``), never under ``min_limit``. Above capacity an admitted
      request's time then stays near ``max_wait_s``; a closed population of users no larger
      than ``min_limit`` is never shed.
    - **when no queue stands** the limit is ``max_limit``: nothing is shed below capacity.

    The bulkhead drops (429) an admitted request that has waited ``max_wait_s`` for a slot
    while the queue stands (see ``AppState``): the bound holds even when the rate falls after
    admission.

    Only the service's own completion rate sizes the limit, never a fixed rate: CPU
    starvation lowers the rate (the host serves fewer requests within the wait) but cannot by
    itself start shedding, since the limit applies only behind a standing queue. Single event
    loop only (no locking).
    """

    # weight of the newest standing window in the drain-rate estimate: 0.5 forgets a window
    # measured before the host slowed down (or sped up) within about three windows
    RATE_WEIGHT = 0.5

    def __init__(self, *, slots: int, min_limit: int, max_limit: int, target_s: float,
                 window_s: float, max_wait_s: float, min_samples: int = 10,
                 standing_windows: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_limit ({min_limit}) <= max_limit ({max_limit})")
        if slots < 1 or target_s <= 0 or window_s <= 0 or max_wait_s <= 0:
            raise ValueError("slots, target_s, window_s and max_wait_s must be positive")
        self.slots = slots
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.target_s = target_s
        self.window_s = window_s
        self.max_wait_s = max_wait_s
        self.min_samples = max(1, min_samples)
        # consecutive windows over the target before the queue counts as standing: one slow
        # window (a pause of the host) is not yet a queue that stands
        self.standing_windows = max(1, standing_windows)
        self._over_target_run = 0
        self._clock = clock
        self.limit = max_limit
        self.in_flight = 0
        self.shed_total = 0
        # admitted requests dropped after waiting max_wait_s behind a standing queue
        self.dropped_total = 0
        self.standing = False
        # requests per second the bulkhead took in while a queue stood (None: not yet seen)
        self.drain_rate: float | None = None
        # the last closed window's 90th percentile of the time in the service (None: none yet)
        self.last_window_p90_s: float | None = None
        self._window_start = clock()
        self._samples: list[float] = []
        self._completed = 0

    def try_acquire(self) -> bool:
        """Take a slot: True when admitted (call :meth:`release` when done), False to shed."""
        if self.in_flight >= self.limit:
            self.shed_total += 1
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        """An admitted request finished: its slot is free."""
        self.in_flight -= 1

    def observe(self, time_s: float, completed: bool = True) -> None:
        """An admitted request spent ``time_s`` in the service; ``completed`` is False for one
        dropped behind a standing queue (its time shows the queue, but the service did not
        complete it, so it is no part of the drain rate). Closes the window when it is due."""
        now = self._clock()
        if not self._samples and now - self._window_start > self.window_s:
            # the first sample after an idle spell opens the window: the idle time before
            # it is not part of any drain rate (a service started seconds before its first
            # requests measured 2 requests/s and shed at its floor)
            self._window_start = now
        self._samples.append(time_s)
        self._completed += completed
        elapsed = now - self._window_start
        if len(self._samples) >= self.min_samples and elapsed >= self.window_s:
            self._revise(elapsed)
            self._window_start = now
            self._samples.clear()
            self._completed = 0

    def _revise(self, elapsed_s: float) -> None:
        samples = sorted(self._samples)
        self.last_window_p90_s = samples[min(len(samples) - 1, int(0.9 * len(samples)))]
        if samples[0] <= self.target_s:
            self._over_target_run = 0
            self.standing = False
            self.limit = self.max_limit
            return
        self._over_target_run += 1
        rate = self._completed / elapsed_s
        self.drain_rate = (rate if self.drain_rate is None else
                           self.RATE_WEIGHT * rate + (1 - self.RATE_WEIGHT) * self.drain_rate)
        self.standing = self._over_target_run >= self.standing_windows
        if not self.standing:
            return
        wanted = self.slots + round(self.drain_rate * self.max_wait_s)
        self.limit = max(self.min_limit, min(self.max_limit, wanted))


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
