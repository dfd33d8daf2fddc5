"""A small HTTP service of "someone else's" for the integrity tests, run as its own process:
answers every GET with 200 after ``--delay`` seconds and exports its own Prometheus metrics
(``app_http_requests_total{code}``, ``app_latency_seconds``) at /metrics. Prints its URL."""

from __future__ import annotations

import argparse
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    registry = CollectorRegistry()
    requests = Counter("app_http_requests", "requests", ["code", "path"], registry=registry)
    latency = Histogram("app_latency_seconds", "latency", ["path"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            started = time.perf_counter()
            if self.path == "/metrics":
                body = generate_latest(registry)
            else:
                if args.delay:
                    time.sleep(args.delay)
                body = b"ok"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            requests.labels("200", self.path).inc()
            latency.labels(self.path).observe(time.perf_counter() - started)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
