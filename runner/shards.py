"""One stage over several k6 generators: N k6 processes, each running one execution segment
(``--execution-segment i/N:(i+1)/N`` with the shared ``--execution-segment-sequence``), started
together, each writing its own raw CSV; and the union of their requests as the stage's
``requests.parquet`` with a ``shard`` column, so that percentiles, rates and counts come from
every request (exact, never an average of the shards' summaries).

k6 splits a scenario's VUs, iterations and arrival rate over the segments of the sequence
(k6's lib/execution_segment.go); neither k6 nor k6-operator merges the results. Each shard
keeps its own exit code, request count, segment, time window and k6 log; the stage's status
is the worst shard's, and a shard that failed or was interrupted makes the stage incomplete
while keeping what the others measured."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from . import conditions
from .errors import UsageError
from .ingest import count_dropped_iterations, csv_to_parquet, sink_atomically
from .outcome import hosts_hit, scenarios_started_at, threshold_results
from .progress import CsvTail
from .rawpipe import RawSink, k6_target
from .store import iso, read_json, utcnow

if TYPE_CHECKING:
    from .execute import K6Outcome, RunSession

MAX_GENERATORS = 64
SHARDS_DIR = "shards"


def check_generators(value: Any, *, flag: str = "--generators") -> int:
    """A valid generator count, or a UsageError naming ``flag``."""
    if isinstance(value, bool) or not isinstance(value, int) or not \
            1 <= value <= MAX_GENERATORS:
        raise UsageError(f"{flag} {value!r}: give a whole number of k6 processes from 1 to "
                         f"{MAX_GENERATORS}")
    return value


def segment(index: int, count: int) -> str:
    """k6's execution segment of generator ``index`` (0-based) of ``count``: 1/3:2/3."""
    return f"{Fraction(index, count)}:{Fraction(index + 1, count)}"


def segment_sequence(count: int) -> str:
    """The execution-segment sequence every generator of ``count`` is given: 0,1/3,2/3,1."""
    return ",".join(str(Fraction(i, count)) for i in range(count + 1))


def segment_args(index: int, count: int) -> list[str]:
    return ["--execution-segment", segment(index, count),
            "--execution-segment-sequence", segment_sequence(count)]


@dataclass
class Shard:
    """One generator of a stage while and after it runs."""

    index: int
    count: int
    dir: Path
    started_at: str | None = None
    ended_at: str | None = None
    code: int | None = None
    raw_name: str = "raw.csv"  # raw.csv.gz when compressed as k6 writes it (runner/rawpipe.py)

    @property
    def raw_csv(self) -> Path:
        return self.dir / self.raw_name

    @property
    def summary_tmp(self) -> Path:
        return self.dir / ".summary.json.tmp"

    @property
    def segment(self) -> str:
        return segment(self.index, self.count)


def _outcome_type() -> type[K6Outcome]:
    from .execute import K6Outcome

    return K6Outcome


def shard_command(cmd: list[str], shard: Shard, raw_csv: Path, summary_tmp: Path) -> list[str]:
    """The stage's k6 command for one shard: its own raw CSV and summary, and its segment
    (before the script, the last argument)."""
    swap = {f"csv={k6_target(raw_csv).resolve()}": f"csv={k6_target(shard.raw_csv).resolve()}",
            str(summary_tmp.resolve()): str(shard.summary_tmp.resolve())}
    out = [swap.get(arg, arg) for arg in cmd]
    return out[:-1] + segment_args(shard.index, shard.count) + out[-1:]


def _severity(code: int | None) -> int:
    """How bad a k6 exit is: ok < thresholds crossed < interrupted < anything else."""
    return {0: 0, 99: 1, 105: 2}.get(code if code is not None else -1, 3)


def worst_code(codes: list[int | None]) -> int:
    known = [c if c is not None else -1 for c in codes]
    return max(known, key=_severity) if known else -1


def stop_all(procs: list[subprocess.Popen[bytes]], grace_s: float | None = None) -> None:
    """Stop every k6 on any exit path, as ``execute.stop_k6`` does for one: SIGINT to each
    process group (all at once, so the shards stop together), one shared bounded wait, then
    SIGKILL to every group; every process is reaped. A second Ctrl-C goes straight to
    SIGKILL."""
    from .execute import STOP_GRACE_S, _signal_group

    live = [p for p in procs if p.poll() is None]
    if not live:
        return
    try:
        for proc in live:
            _signal_group(proc, signal.SIGINT)
        deadline = time.monotonic() + (STOP_GRACE_S if grace_s is None else grace_s)
        for proc in live:
            proc.wait(max(0.0, deadline - time.monotonic()))
    except BaseException as exc:
        for proc in live:
            _signal_group(proc, signal.SIGKILL)
        for proc in live:
            proc.wait()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
    else:
        for proc in live:
            _signal_group(proc, signal.SIGKILL)


@dataclass
class ShardedOutcome:
    """What the N k6 processes of a stage did, shaped as one :class:`K6Outcome` (the worst
    shard's exit code) plus each shard."""

    outcome: K6Outcome
    shards: list[Shard] = field(default_factory=list)


def drive(session: RunSession, cmd: list[str], env: Mapping[str, str], stage_dir: Path,
          title: str, raw_csv: Path, summary_tmp: Path, limit_s: float,
          stop_when: Callable[[float], str | None] | None = None) -> ShardedOutcome:
    """Run the stage's k6 command as ``session.generators`` processes started together, with
    one status line of their total; every process (its whole group) is stopped on every way
    out of here: the time bound, Ctrl-C, ``stop_when``, or any exception. The stage's
    ``k6.log`` is every shard's log, one after the other, each under a header line."""
    count = session.generators
    shards = [Shard(i, count, stage_dir / SHARDS_DIR / str(i), raw_name=raw_csv.name)
              for i in range(count)]
    tails = [CsvTail(str(s.raw_csv)) for s in shards]
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    sinks: list[RawSink] = []
    interrupted = timed_out = False
    stopped: str | None = None
    window: list[tuple[float, int]] = []
    try:
        # as in execute._drive_k6: k6's CPU is read from the reaped children (every shard)
        watch = conditions.CpuWatch({"target": session._target_pids}).start()
        for shard in shards:
            shard.dir.mkdir(parents=True, exist_ok=False)
            sinks.append(RawSink(shard.raw_csv).start())
        commands = [shard_command(cmd, s, raw_csv, summary_tmp) for s in shards]
        for shard, command in zip(shards, commands, strict=True):
            log = open(shard.dir / "k6.log", "w")  # noqa: SIM115 - closed in finally
            logs.append(log)
            shard_env = {**env, "LP_SUMMARY_PATH": str(shard.summary_tmp.resolve()),
                         "LP_GENERATORS": str(count)}
            procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                          env=shard_env, cwd=shard.dir,
                                          start_new_session=True))
            shard.started_at = iso(utcnow())
        session.progress.line(f"{title}: {count} k6 generators, execution segments "
                              + ", ".join(s.segment for s in shards))
        started = time.monotonic()
        while any(p.poll() is None for p in procs):
            # back as soon as the last generator exits, else once a second for the status line
            tick = time.monotonic() + 1.0
            while time.monotonic() < tick and any(p.poll() is None for p in procs):
                time.sleep(0.05)
            _note_ended(shards, procs)
            recent = errors = limited = 0
            for tail in tails:
                tail.poll()
                recent += tail.recent
                errors += tail.recent_errors
                limited += tail.recent_rate_limited
            total = sum(t.requests for t in tails)
            elapsed = time.monotonic() - started
            window.append((elapsed, total))
            while len(window) > 2 and window[-1][0] - window[0][0] > 3.0:
                window.pop(0)
            span = window[-1][0] - window[0][0]
            rate = ((window[-1][1] - window[0][1]) / span) if span > 0 else 0.0
            running = sum(1 for p in procs if p.poll() is None)
            shown = f"{rate:7.1f} req/s" if total else "waiting for k6's first results"
            session.progress.status(
                f"{title}: {elapsed:5.1f}s  {shown}  requests {total} "
                f"({running}/{count} generators running)"
                f"  errors {errors / recent if recent else 0:.1%}"
                f"  429 {limited / recent if recent else 0:.1%} (latest samples)")
            if elapsed > limit_s:
                timed_out = True
                break
            if stop_when is not None and (stopped := stop_when(elapsed)) is not None:
                break
    except KeyboardInterrupt:
        if not procs:  # no k6 started; the run's close marks this stage
            raise
        interrupted = True
    finally:
        stop_all(procs)
        for sink in sinks:  # after k6 is reaped: the rest of each pipe is read
            sink.stop()
        for log in logs:
            log.close()
        session.progress.done()
    _note_ended(shards, procs)
    for shard, proc in zip(shards, procs, strict=True):
        shard.code = proc.returncode
    for sink in sinks:
        sink.finish()  # a write error, if any, fails the stage's saving
    _combine_logs(shards, stage_dir / "k6.log")
    outcome = _outcome_type()(worst_code([s.code for s in shards]), interrupted, timed_out,
                              watch.stop(), watch, stopped)
    return ShardedOutcome(outcome, shards)


def _note_ended(shards: list[Shard], procs: list[subprocess.Popen[bytes]]) -> None:
    for shard, proc in zip(shards, procs, strict=False):
        if shard.ended_at is None and proc.poll() is not None:
            shard.ended_at = iso(utcnow())


def _combine_logs(shards: list[Shard], path: Path) -> None:
    with open(path, "w") as out:
        for shard in shards:
            out.write(f"=== loadproof generator {shard.index} of {shard.count}: "
                      f"--execution-segment {shard.segment} "
                      f"({SHARDS_DIR}/{shard.index}/k6.log) ===\n")
            out.write(_read(shard.dir / "k6.log"))


def _shard_status(code: int | None, outcome: K6Outcome) -> str:
    if code in (0, 99) or (code == 105 and outcome.stopped_early is not None):
        return "complete"
    if outcome.interrupted or outcome.timed_out:
        return "incomplete"
    return "failed"


def save_files(session: RunSession, record: dict[str, Any], stage_dir: Path, stage_key: str,
               repeat: int, sharded: ShardedOutcome) -> None:
    """The stage's files from its shards: each shard's summary (kept in its folder) and
    requests, their union as the stage's requests.parquet with a ``shard`` column, and the
    stage record's ``shards`` (exit code, segment, requests, time window of each)."""
    from .execute import K6_EXIT_CODES, MAIN_THRESHOLDS

    base = f"stages/{stage_dir.name}"
    declared = (session._script_options.options.get("thresholds")
                if session._script_options is not None else None)
    parts: list[tuple[int, Path]] = []
    entries: list[dict[str, Any]] = []
    dropped: list[int | None] = []
    hosts: dict[str, int] = {}
    hosts_known = False
    for shard in sharded.shards:
        rel = f"{base}/{SHARDS_DIR}/{shard.index}"
        entry: dict[str, Any] = {
            "shard": shard.index, "segment": shard.segment,
            "segment_sequence": segment_sequence(shard.count),
            "k6_exit_code": shard.code,
            "k6_exit_meaning": K6_EXIT_CODES.get(shard.code if shard.code is not None else -1,
                                                 "unknown k6 exit code"),
            "status": _shard_status(shard.code, sharded.outcome),
            "started_at": shard.started_at, "ended_at": shard.ended_at,
            "log_file": f"{rel}/k6.log", "requests": 0,
            "first_request_at": None, "last_request_at": None, "dropped_iterations": None,
        }
        if shard.summary_tmp.is_file():
            os.replace(shard.summary_tmp, shard.dir / "summary.json")
            summary = read_json(shard.dir / "summary.json", what="k6 summary")
            entry["summary_file"] = f"{rel}/summary.json"
            entry["threshold_results"] = [t for t in threshold_results(summary, declared)
                                          if t["metric"] not in MAIN_THRESHOLDS]
        start = scenarios_started_at(_read(shard.dir / "k6.log"))
        entry["load_started_at"] = iso(start) if start is not None else None
        if shard.raw_csv.is_file() and shard.raw_csv.stat().st_size > 0:
            part = shard.dir / "requests.parquet"
            entry["requests"] = csv_to_parquet(shard.raw_csv, part, stage=stage_key,
                                               repeat=repeat)
            parts.append((shard.index, part))
            entry["dropped_iterations"] = count_dropped_iterations(shard.raw_csv)
            found = hosts_hit(shard.raw_csv)
            if found is not None:
                hosts_known = True
                for host, n in found.items():
                    hosts[host] = hosts.get(host, 0) + n
            span = pl.scan_parquet(part).select(pl.col("timestamp").min().alias("first"),
                                                pl.col("timestamp").max().alias("last")
                                                ).collect()
            if entry["requests"]:
                entry["first_request_at"] = iso(span["first"][0])
                entry["last_request_at"] = iso(span["last"][0])
        dropped.append(entry["dropped_iterations"])
        entries.append(entry)
    record["generators"] = len(sharded.shards)
    record["shards"] = entries
    if parts:
        merge_parts(parts, stage_dir / "requests.parquet")
        for _index, part in parts:
            part.unlink()
        record["requests_file"] = f"{base}/requests.parquet"
        record["requests"] = sum(e["requests"] for e in entries)
    record["dropped_iterations"] = (sum(d for d in dropped if d is not None)
                                    if any(d is not None for d in dropped) else None)
    record["hosts"] = dict(sorted(hosts.items(), key=lambda kv: -kv[1])) if hosts_known \
        else None
    results = _combined_thresholds(entries)
    if results:
        record["threshold_results"] = results
        record["threshold_scope"] = "shards"


def drop_raw(session: RunSession, record: dict[str, Any], sharded: ShardedOutcome) -> None:
    """Each shard's raw CSV is kept only with --keep-raw (after the server's window edges
    were checked against them)."""
    raws = [s.raw_csv for s in sharded.shards if s.raw_csv.is_file()]
    if session.keep_raw:
        record["raw_files"] = [f"stages/{record['dir']}/{SHARDS_DIR}/{p.parent.name}/{p.name}"
                               for p in raws]
    else:
        for raw in raws:
            raw.unlink()


def merge_parts(parts: list[tuple[int, Path]], out: Path) -> None:
    """The union of per-shard requests.parquet files, each row tagged with its ``shard``."""
    frames = [pl.scan_parquet(path).with_columns(pl.lit(index, pl.Int32).alias("shard"))
              for index, path in parts]
    sink_atomically(pl.concat(frames, how="vertical"), out)


def _combined_thresholds(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each threshold once: k6 judged it in every shard over that shard's share only, so it
    held when it held in every shard (``shards_crossed`` names the others). The stage's own
    figures, from the union of requests, are what loadproof compares."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        for item in entry.get("threshold_results") or []:
            key = (item["metric"], item["threshold"])
            into = merged.setdefault(key, {**item, "ok": True, "shards_crossed": []})
            if item["ok"] is False:
                into["ok"] = False
                into["shards_crossed"].append(entry["shard"])
            elif item["ok"] is None and into["ok"] is True:
                into["ok"] = None
            into["abort_on_fail"] = into["abort_on_fail"] or item["abort_on_fail"]
    return list(merged.values())


def settle_status(record: dict[str, Any]) -> None:
    """A stage whose shards did not all complete: failed only when none of them measured
    anything; otherwise incomplete, naming the shards, with the others' requests kept."""
    shards = record.get("shards") or []
    bad = [s for s in shards if s["status"] != "complete"]
    if not bad:
        return
    named = "; ".join(f"generator {s['shard']} ({s['segment']}): {s['status']}, k6 exit "
                      f"{s['k6_exit_code']} ({s['k6_exit_meaning']})" for s in bad)
    if record["status"] == "failed" and record.get("requests"):
        record["status"] = "incomplete"
        record["status_reason"] = (f"{len(bad)} of {len(shards)} generators did not complete "
                                   f"({named}); the requests all generators sent are kept, "
                                   "but the planned load was not all sent")
    elif record["status"] in ("complete", "incomplete"):
        record["status"] = "incomplete"
        record["status_reason"] = ((record.get("status_reason") or "") + "; "
                                   if record.get("status_reason") else "") + \
            f"{len(bad)} of {len(shards)} generators did not complete ({named})"


def window_overlap(windows: list[tuple[dt.datetime, dt.datetime]]) -> float:
    """Seconds during which every window was open at once (0 when they do not all overlap)."""
    if not windows:
        return 0.0
    start = max(w[0] for w in windows)
    end = min(w[1] for w in windows)
    return max((end - start).total_seconds(), 0.0)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
