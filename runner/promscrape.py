"""The server's own view of a stage: its Prometheus metrics scraped right before the measured
window, every few seconds during it, and right after it, so the requests the server counted
and its handler latency can be set beside what k6 saw.

The window's edges are exact by construction, not by luck: when a stage is scraped, k6's
measured scenario starts ``SCRAPE_GAP_S`` after the warm-up ends (the warm-up's iterations are
stopped half-way into that gap), the first scrape is taken in the gap's third quarter, and
the last one after k6 has exited. Whether the edges really were clean is then checked against
the requests k6 recorded (the warm-up's last answer before the first scrape was sent, the
measured scenario's first request sent after it was answered) and, when the server exports
it, against its in-flight gauge."""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from .outcome import scenarios_started_at

# the reference service's metric names (runner/../services/orchestrator/telemetry.py): its
# latency histogram's _count series is the request counter by route, method and status
DEFAULT_REQUESTS_METRIC = "http_request_duration_seconds_count"
DEFAULT_LATENCY_METRIC = "http_request_duration_seconds"
IN_FLIGHT_METRIC = "http_requests_in_flight"
# the labels a status is read from, in this order (the first the series carry)
STATUS_LABELS = ("status", "code", "status_code", "http_status")
SCRAPE_GAP_S = 1.0  # between the warm-up and the measured scenario, when a stage is scraped
TIMELINE_INTERVAL_S = 2.0
SCRAPE_TIMEOUT_S = 5.0
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
MARK_TIMEOUT_S = 120.0  # how long to wait for k6's test-start mark (setup may be slow)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class ServerMetrics:
    """Where a stage's server metrics come from and which series to read."""

    url: str
    requests: str = DEFAULT_REQUESTS_METRIC
    latency: str = DEFAULT_LATENCY_METRIC

    @property
    def own_path(self) -> str:
        """The metrics endpoint's own path: its scrapes are left out of the server's count."""
        return urlsplit(self.url).path or "/"


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by sample name and labels
    (prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


def scrape(url: str, client: httpx.Client | None = None) -> tuple[Samples, dt.datetime,
                                                                  dt.datetime]:
    """Scrape ``url``: its samples, and when the request was sent and answered (UTC)."""
    sent = dt.datetime.now(dt.UTC)
    response = httpx.get(url, timeout=SCRAPE_TIMEOUT_S) if client is None else client.get(url)
    answered = dt.datetime.now(dt.UTC)
    response.raise_for_status()
    return parse(response.text), sent, answered


def _excluded(labels: frozenset[tuple[str, str]], own_path: str) -> bool:
    return any(value == own_path for _, value in labels)


def _series(samples: Samples, names: Iterable[str], own_path: str) -> Samples:
    wanted = set(names)
    return {key: value for key, value in samples.items()
            if key[0] in wanted and not _excluded(key[1], own_path)}


def _request_names(metric: str) -> tuple[str, ...]:
    # a counter is exposed as NAME_total; a histogram's request count is NAME_count
    return (metric, f"{metric}_total", f"{metric}_count") if not metric.endswith(
        ("_total", "_count")) else (metric,)


def _delta(before: Samples, after: Samples) -> tuple[Samples, bool]:
    """after - before per series (a series new in ``after`` counts from 0); and whether a
    counter went backwards (the server restarted: the delta means nothing)."""
    out: Samples = {}
    reset = False
    for key, value in after.items():
        diff = value - before.get(key, 0.0)
        if diff < 0:
            reset = True
        out[key] = diff
    return out, reset


def requests_by_status(delta: Samples, metric: str, own_path: str) -> dict[str, int]:
    """Requests per status (the first of STATUS_LABELS the series carry; "all" when none)."""
    out: dict[str, int] = {}
    for (_, labels), value in _series(delta, _request_names(metric), own_path).items():
        label_map = dict(labels)
        status = next((label_map[name] for name in STATUS_LABELS if name in label_map), "all")
        out[status] = out.get(status, 0) + int(round(value))
    return dict(sorted((status, n) for status, n in out.items() if n))


def buckets(delta: Samples, metric: str, own_path: str) -> list[tuple[float, float]]:
    """The histogram's cumulative buckets summed over all its other labels: (le, count)."""
    summed: dict[float, float] = {}
    for (_, labels), value in _series(delta, [f"{metric}_bucket"], own_path).items():
        le = dict(labels).get("le")
        if le is None:
            continue
        bound = math.inf if le in ("+Inf", "Inf", "inf") else float(le)
        summed[bound] = summed.get(bound, 0.0) + value
    return sorted(summed.items())


def histogram_quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets sorted by upper bound: linear
    interpolation inside the bucket the rank falls in (from 0 for the first bucket); a rank in
    the +Inf bucket gives the highest finite bound. None without observations."""
    if not cumulative or cumulative[-1][0] != math.inf:
        return None
    total = cumulative[-1][1]
    if total <= 0:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for index, (bound, count) in enumerate(cumulative):
        if count >= rank:
            if bound == math.inf:
                return cumulative[-2][0] if len(cumulative) > 1 else None
            if index == 0 and bound <= 0:
                return bound
            in_bucket = count - previous_count
            if in_bucket <= 0:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / in_bucket
        previous_bound, previous_count = bound, count
    return None


def quantile_bucket(q: float, cumulative: list[tuple[float, float]]) \
        -> tuple[float, float] | None:
    """The bounds of the bucket the q-quantile falls in: histogram_quantile's estimate can be
    anywhere in it, so this is how precise the server's figure is."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank, lower = q * cumulative[-1][1], 0.0
    for bound, count in cumulative:
        if count >= rank:
            return lower, bound
        lower = bound
    return None


def _gauge(samples: Samples, name: str) -> float | None:
    values = [v for (n, _), v in samples.items() if n == name]
    return sum(values) if values else None


@dataclass
class Scraper:
    """Scrapes a stage's server metrics in a thread: once in the gap before the measured
    scenario (``window_offset_s`` after k6's test-start mark in ``k6_log``; with no offset,
    at once, before k6 starts), then every TIMELINE_INTERVAL_S; ``stop`` (called after k6 has
    exited) takes the last scrape."""

    source: ServerMetrics
    k6_log: Path
    window_offset_s: float | None  # None: the first scrape is taken before k6 starts
    # a stage split over several k6 processes (--generators): each writes its own log
    # (shards/<i>/k6.log beside k6_log), and the window's first scrape waits for every mark
    generators: int = 1
    scrapes: list[tuple[dt.datetime, dt.datetime, Samples]] = field(default_factory=list)
    error: str | None = None
    timeline_failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _client: httpx.Client | None = None

    @property
    def logs(self) -> list[Path]:
        """The k6 logs whose test-start marks place the window's first scrape."""
        if self.generators <= 1:
            return [self.k6_log]
        return [self.k6_log.parent / "shards" / str(i) / "k6.log"
                for i in range(self.generators)]

    def start(self) -> Scraper:
        self._client = httpx.Client(timeout=SCRAPE_TIMEOUT_S)
        if self.window_offset_s is None:
            self._take()
        if self.error is None:
            self._thread = threading.Thread(target=self._loop, name="loadproof-scraper",
                                            daemon=True)
            self._thread.start()
        return self

    def _take(self, edge: bool = True) -> bool:
        """One scrape. A failed scrape at the window's edge leaves the stage without a server
        view (``error``); one in between only leaves a hole in the timeline."""
        try:
            samples, sent, answered = scrape(self.source.url, self._client)
        except (httpx.HTTPError, ValueError) as exc:
            if edge:
                self.error = (f"scraping {self.source.url} failed: {exc.__class__.__name__}: "
                              f"{exc}")
            else:
                self.timeline_failures += 1
            return False
        self.scrapes.append((sent, answered, samples))
        return True

    def _loop(self) -> None:
        if self.window_offset_s is not None:
            deadline = time.monotonic() + MARK_TIMEOUT_S
            marks: list[dt.datetime | None] = [None] * len(self.logs)
            while any(mark is None for mark in marks):
                if self._stop.wait(0.05):
                    self.error = "k6 ended before its measured scenario started"
                    return
                if time.monotonic() > deadline:
                    missing = [str(log.relative_to(self.k6_log.parent))
                               for log, mark in zip(self.logs, marks, strict=True)
                               if mark is None]
                    self.error = f"no test-start mark in {', '.join(missing)}"
                    return
                for i, log in enumerate(self.logs):
                    if marks[i] is None:
                        try:
                            marks[i] = scenarios_started_at(log.read_text(errors="replace"))
                        except OSError:
                            marks[i] = None
            known = [mark for mark in marks if mark is not None]
            # the generators start a little apart: the scrape goes halfway between the
            # latest warm-up's stop and the earliest measured scenario's start (with one
            # generator, the offset after its mark)
            mark = min(known) + (max(known) - min(known)) / 2
            at = mark + dt.timedelta(seconds=self.window_offset_s)
            wait = (at - dt.datetime.now(dt.UTC)).total_seconds()
            if wait < 0:
                self.error = "the mark was read too late to scrape before the measured scenario"
                return
            if self._stop.wait(wait) or not self._take():
                return
        while not self._stop.wait(TIMELINE_INTERVAL_S):
            self._take(edge=False)

    def stop(self) -> None:
        """The last scrape (when the first one was taken); a no-op if never started."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(SCRAPE_TIMEOUT_S + 1)
        if self._client is None:
            return
        if self.scrapes and self.error is None:
            self._take()
        self._client.close()


def stage_scraper(source: ServerMetrics, k6_log: Path, warmup_s: float,
                  shipped: bool, generators: int = 1) -> tuple[Scraper, float]:
    """A stage's scraper and the gap its window needs after the warm-up. Without a warm-up a
    shipped script sends nothing before its measured scenario, so the first scrape is taken
    before k6 starts and no gap is needed; a user's script may send requests in its setup,
    so it gets the gap too. A stage split over several generators gets twice the gap: their
    k6 processes start up to about half a second apart, and the first scrape must fall
    after every warm-up stopped and before any measured scenario starts."""
    gap_s = (SCRAPE_GAP_S * (2 if generators > 1 else 1)) if warmup_s or not shipped else 0.0
    offset = warmup_s + 0.75 * gap_s if gap_s else None
    return Scraper(source, k6_log, offset, generators=generators), gap_s


def script_scraper(source: ServerMetrics, k6_log: Path) -> Scraper:
    """The scraper of a script-driven run (k6 runs the user's script as written): its window
    is the whole k6 test, scraped before k6 starts and after it exits."""
    return Scraper(source, k6_log, None)


def k6_env(gap_s: float, remote_write: str | None) -> dict[str, str]:
    """The shipped scripts' gap before the measured scenario, and the URL of k6's Prometheus
    remote-write output (--prometheus-rw)."""
    env = {"LP_GAP_MS": str(int(round(gap_s * 1000)))} if gap_s else {}
    if remote_write:
        env["K6_PROMETHEUS_RW_SERVER_URL"] = remote_write
    return env


def server_record(scraper: Scraper) -> dict[str, Any]:
    """The stage record's ``server``: what the server counted and timed between the first and
    the last scrape."""
    source = scraper.source
    out: dict[str, Any] = {"url": source.url,
                           "metrics": {"requests": source.requests, "latency": source.latency}}
    if scraper.error is not None or len(scraper.scrapes) < 2:
        out["error"] = scraper.error or "fewer than two scrapes"
        return out
    scrapes = sorted(scraper.scrapes, key=lambda scrape: scrape[0])
    first, last = scrapes[0], scrapes[-1]
    read = set(_request_names(source.requests)) | {f"{source.latency}_bucket"}
    delta, reset = _delta(*({k: v for k, v in scrape[2].items() if k[0] in read}
                            for scrape in (first, last)))
    if reset:
        out["error"] = "a counter went backwards between the scrapes (the server restarted)"
        return out
    by_status = requests_by_status(delta, source.requests, source.own_path)
    if not _series(last[2], _request_names(source.requests), source.own_path):
        out["error"] = f"no {source.requests} series at {source.url}"
        return out
    cumulative = buckets(delta, source.latency, source.own_path)
    quantiles = {f"p{int(q * 100)}_ms": histogram_quantile(q, cumulative)
                 for q in (0.50, 0.95, 0.99)}
    if not cumulative:
        out["latency_error"] = f"no {source.latency}_bucket series at {source.url}"
    out.update({
        "window_start": {"sent": _iso(first[0]), "answered": _iso(first[1])},
        "window_end": {"sent": _iso(last[0]), "answered": _iso(last[1])},
        "scrapes": len(scraper.scrapes),
        "failed_scrapes": scraper.timeline_failures,
        "requests": by_status,
        "requests_total": sum(by_status.values()),
        **{k: (round(v * 1000, 3) if v is not None else None) for k, v in quantiles.items()},
        "p95_bucket_ms": ([round(b * 1000, 3) if math.isfinite(b) else None
                           for b in bucket] if (bucket := quantile_bucket(0.95, cumulative))
                          else None),
        "in_flight_at_start": _gauge(first[2], IN_FLIGHT_METRIC),
        "in_flight_at_end": _gauge(last[2], IN_FLIGHT_METRIC),
    })
    return out


def timeline_rows(scraper: Scraper) -> list[tuple[dt.datetime, str, int]]:
    """Per scrape (its answer time) and status: the server's requests since the first scrape."""
    if len(scraper.scrapes) < 2:
        return []
    first = scraper.scrapes[0][2]
    rows = []
    for _, answered, samples in scraper.scrapes:
        delta, _ = _delta(first, samples)
        for status, count in requests_by_status(delta, scraper.source.requests,
                                                scraper.source.own_path).items():
            rows.append((answered, status, count))
    return rows


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_edges(server: dict[str, Any], raw_csv: Path | list[Path]) -> dict[str, Any] | None:
    """Whether the window's edges were clean, from k6's raw CSV (each generator's, when the
    stage was split): every warm-up answer came before the first scrape was sent, and the
    measured scenario's first request was sent after that scrape was answered (a request's
    start is its end less its duration). None when the raw data cannot tell."""
    import polars as pl

    raws = [raw_csv] if isinstance(raw_csv, Path) else raw_csv
    if "window_start" not in server or not raws or not all(r.is_file() for r in raws):
        return None
    frames = [pl.scan_csv(raw, infer_schema=False, low_memory=True) for raw in raws]
    if any("scenario" not in f.collect_schema().names() for f in frames):
        return None
    frame = pl.concat([f.select("metric_name", "scenario", "timestamp", "metric_value")
                       for f in frames])
    rows = (frame.filter(pl.col("metric_name") == "http_req_duration")
            .select(pl.col("scenario"),
                    pl.col("timestamp").cast(pl.Int64).alias("end_us"),
                    (pl.col("metric_value").cast(pl.Float64) * 1000).alias("duration_us"))
            .group_by("scenario")
            .agg(pl.col("end_us").max().alias("last_end_us"),
                 (pl.col("end_us") - pl.col("duration_us")).min().alias("first_start_us"))
            .collect())
    spans = {r["scenario"]: r for r in rows.iter_rows(named=True)}
    sent = _parse_iso(server["window_start"]["sent"]).timestamp() * 1e6
    answered = _parse_iso(server["window_start"]["answered"]).timestamp() * 1e6
    out: dict[str, Any] = {}
    if "warmup" in spans:
        out["warmup_done_before_first_scrape"] = spans["warmup"]["last_end_us"] < sent
    if "main" in spans:
        out["main_started_after_first_scrape"] = spans["main"]["first_start_us"] > answered
    end_sent = _parse_iso(server["window_end"]["sent"]).timestamp() * 1e6
    if "main" in spans:
        out["main_done_before_last_scrape"] = spans["main"]["last_end_us"] < end_sent
    # the first scrape is itself in flight when a server's gauge counts every request
    out["clean"] = all(out.values()) and (server.get("in_flight_at_start") or 0) <= 1
    return out


def record_stage(scraper: Scraper | None, record: dict[str, Any], stage_dir: Path,
                 raw_csv: Path | list[Path]) -> None:
    """Put the server's view of a finished stage in its record (``server``), its timeline in
    ``server.parquet``, and whether the window's edges were clean (``server.edges``)."""
    if scraper is None:
        return
    server = server_record(scraper)
    if "error" not in server:
        edges = check_edges(server, raw_csv)
        if edges is not None:
            server["edges"] = edges
        _write_timeline(scraper, server, stage_dir)
        client = record.get("requests")
        if client is not None:
            server["client_requests"] = client
            server["difference"] = server["requests_total"] - client
        server["client_p95_ms"] = _client_p95(stage_dir / "requests.parquet")
    record["server"] = server


def record_script(scraper: Scraper | None, records: list[dict[str, Any]], stage_dir: Path,
                  raw_csv: Path) -> None:
    """A script-driven run's server view (k6 ran the user's script as written): one window,
    the whole k6 test, scraped before k6 started and after it exited, so nothing is in flight
    at its edges. The server's count is set beside every request k6 sent in the test (its
    raw CSV: setup, teardown and every scenario); ``client_requests_stored`` is what the
    run's stages keep. Every stage record of the run gets the same ``server``, with
    ``scope: "test"`` (never summed over the stages)."""
    if scraper is None:
        return
    server = server_record(scraper)
    server["scope"] = "test"
    if "error" not in server:
        server["edges"] = {"first_scrape_before_k6_started": True,
                           "last_scrape_after_k6_exited": True,
                           "clean": (server.get("in_flight_at_start") or 0) <= 1}
        _write_timeline(scraper, server, stage_dir)
        sent = _requests_sent(raw_csv)
        if sent is not None:
            server["client_requests"] = sent
            server["difference"] = server["requests_total"] - sent
        server["client_requests_stored"] = sum(int(r.get("requests") or 0) for r in records)
        server["client_p95_ms"] = _client_p95(stage_dir / "requests.parquet")
    for record in records:
        record["server"] = dict(server)


def _write_timeline(scraper: Scraper, server: dict[str, Any], stage_dir: Path) -> None:
    rows = timeline_rows(scraper)
    if rows:
        import polars as pl

        pl.DataFrame(rows, schema={"timestamp": pl.Datetime("us", "UTC"),
                                   "status": pl.String, "requests": pl.Int64},
                     orient="row").write_parquet(stage_dir / "server.parquet")
        server["timeline_file"] = f"stages/{stage_dir.name}/server.parquet"


def _client_p95(requests: Path) -> float | None:
    if not requests.is_file():
        return None
    import polars as pl

    p95 = pl.scan_parquet(requests).select(
        pl.col("duration_ms").quantile(0.95, "nearest")).collect().item()
    return round(float(p95), 3) if p95 is not None else None


def _requests_sent(raw_csv: Path) -> int | None:
    """Every HTTP request k6 recorded in its raw CSV (http_reqs samples)."""
    if not raw_csv.is_file():
        return None
    import polars as pl

    return int(pl.scan_csv(raw_csv, infer_schema=False, low_memory=True)
               .filter(pl.col("metric_name") == "http_reqs").select(pl.len()).collect().item())


def check_options(args: Any) -> dict[str, Any]:
    """The run's integrity options from the command line, checked before any load: URLs are
    http(s), --target-pid goes with --target, the metric names with a metrics source."""
    from .errors import UsageError

    options: dict[str, Any] = {}
    for flag, key in (("--prometheus", "prometheus"), ("--prometheus-rw", "prometheus_rw")):
        value = getattr(args, key, None)
        if value is None:
            continue
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"{flag} {value!r}: expected an http:// or https:// URL")
        options[key] = value
    for flag, key in (("--prometheus-requests", "prometheus_requests"),
                      ("--prometheus-latency", "prometheus_latency")):
        value = getattr(args, key, None)
        if value is None:
            continue
        if not _METRIC_NAME.fullmatch(value):
            raise UsageError(f"{flag} {value!r}: not a Prometheus metric name")
        if getattr(args, "prometheus", None) is None and getattr(args, "profile", None) is None:
            raise UsageError(f"{flag} names a series of the server's metrics: give --prometheus "
                             "URL too")
        options[key] = value
    pid = getattr(args, "target_pid", None)
    if pid is not None:
        if getattr(args, "profile", None) is not None:
            raise UsageError("--target-pid and --profile conflict: loadproof samples the "
                             "reference service it starts")
        if pid <= 0:
            raise UsageError(f"--target-pid {pid}: expected a process id above 0")
        options["target_pid"] = pid
    return options


def preflight(source: ServerMetrics) -> None:
    """Before any load: the metrics answer and carry the request counter."""
    from .errors import TargetError, UsageError

    try:
        samples, _, _ = scrape(source.url)
    except (httpx.HTTPError, ValueError) as exc:
        raise TargetError(f"--prometheus {source.url}: could not scrape it "
                          f"({exc.__class__.__name__}: {exc}); no load was sent",
                          url=source.url) from None
    names = set(_request_names(source.requests))
    if not any(name in names for name, _ in samples):
        raise UsageError(f"--prometheus-requests {source.requests}: no such series at "
                         f"{source.url} (give the server's request counter)")
