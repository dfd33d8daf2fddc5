"""Prometheus metrics of the service, one registry per application instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("http_request_duration_seconds", "Request latency",
                                 ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        # several service processes: gauges kept up to date live are summed over the processes;
        # the others are reported per process (a pid label), each as that process last set it
        self.in_flight = Gauge("http_requests_in_flight", "Requests being served", registry=r,
                               multiprocess_mode="livesum")
        self.rate_limited = Counter("rate_limited", "Requests shed with 429", registry=r)
        self.admission_limit = Gauge("admission_concurrency_limit",
                                     "Admission control: current concurrency limit", registry=r)
        self.admission_in_flight = Gauge("admission_in_flight",
                                         "Admission control: admitted requests in flight",
                                         registry=r)
        self.admission_shed = Counter("admission_shed", "Requests refused with 429, by cause",
                                      ["reason"], registry=r)
        self.admission_window_p90 = Gauge(
            "admission_window_delay_p90_seconds",
            "Admission control: 90th percentile of admitted requests' time in the service in "
            "the last closed window", registry=r)
        self.admission_standing = Gauge(
            "admission_standing_queue",
            "Admission control: 1 while a queue stands in the service (every request of the "
            "last windows over the target), when the limit applies", registry=r)
        self.admission_drain_rate = Gauge(
            "admission_drain_rate_per_second",
            "Admission control: admitted requests/s the service completed in windows over "
            "the target", registry=r)
        self.bulkhead_wait = Histogram("db_bulkhead_wait_seconds",
                                       "Queue wait for a database bulkhead slot",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.bulkhead_waiting = Gauge("db_bulkhead_waiting",
                                      "Requests waiting for a database bulkhead slot", registry=r,
                                      multiprocess_mode="livesum")
        self.pool_size = Gauge("db_pool_size", "Configured steady pool size", ["pool"], registry=r)
        self.pool_checked_out = Gauge("db_pool_checked_out", "Connections in use", ["pool"],
                                      registry=r)
        self.pool_overflow = Gauge("db_pool_overflow", "Overflow connections open", ["pool"],
                                   registry=r)
        self.breaker_state = Gauge("breaker_state", "Circuit breaker state (1 = current)",
                                   ["state"], registry=r)
        self.breaker_transitions = Counter("breaker_transitions", "Breaker state changes",
                                           ["from_state", "to_state"], registry=r)
        self.queue_depth = Gauge("task_queue_depth", "Tasks waiting for a worker", registry=r,
                                 multiprocess_mode="mostrecent")
        self.tasks_processed = Counter("tasks_processed", "Tasks finished by workers",
                                       ["outcome"], registry=r)


def exposition(telemetry: Telemetry) -> bytes:
    """The Prometheus text of this process, or of every service process when they run under
    prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR set at start)."""
    import os

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return bytes(generate_latest(telemetry.registry))
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return bytes(generate_latest(registry))
