"""Token bucket and circuit breaker, on a fake clock."""

from loadproof.orchestrator.resilience import BreakerState, CircuitBreaker, CircuitOpen, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_admits_burst_then_sheds_and_refills() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.try_acquire()
    assert 0.09 < wait <= 0.1
    assert bucket.rejected_total == 1
    clock.now += 0.1
    assert bucket.try_acquire() == 0.0


def test_breaker_opens_after_threshold_and_recovers_through_one_probe() -> None:
    clock = Clock()
    transitions: list[tuple[str, str]] = []
    breaker = CircuitBreaker(3, 2.0, clock=clock,
                             on_transition=lambda a, b: transitions.append((a.value, b.value)))
    for _ in range(3):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    try:
        breaker.before_call()
        raise AssertionError("an open breaker must refuse calls")
    except CircuitOpen:
        pass
    clock.now += 2.0
    breaker.before_call()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    try:
        breaker.before_call()  # a second caller while the probe is out
        raise AssertionError("half-open admits one probe only")
    except CircuitOpen:
        pass
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_failed_probe_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 1.0, clock=clock)
    breaker.before_call()
    breaker.record_failure()
    clock.now += 1.0
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
