"""Capacity search against targets whose capacity is known by construction.

1. A slot server on 127.0.0.1: C service slots, each held S ms per request (an asyncio
   semaphore around a sleep), so it serves at most C / S requests per ms, C * 1000 / S req/s;
   above that its queue, and so its latency, grows without bound. Plain k6 (constant arrival
   rate, through ``loadproof run``) measures it just under and over that rate; then
   ``loadproof capacity`` searches it --searches times: trials, time spent and the error of the
   found capacity against C * 1000 / S (target: within -10%/+5% in <= 15 trials, median).
2. Generator-limited: the same server with no hold, far faster than one k6 process on this
   machine, searched from 1,000 req/s under a generous SLO (p95 <= 1 s, >= 50% 2xx), must end
   with limited_by "generator".

    python bench/capacity_search.py [--slots 15] [--hold-ms 50] [--searches 3]
    python bench/capacity_search.py serve --slots 15 --hold-ms 50   # the server alone
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadproof.capacity import SearchResult

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BODY = b'{"ok": true}'
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


async def _serve(slots: int, hold_ms: float, port: int) -> None:
    gate = asyncio.Semaphore(slots)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:].strip() or 0)
                if length:
                    await reader.readexactly(length)
                if hold_ms > 0:
                    async with gate:  # a request holds one of the slots for hold_ms
                        await asyncio.sleep(hold_ms / 1000)
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


@contextmanager
def slot_server(slots: int, hold_ms: float) -> Iterator[str]:
    """The slot server in a process of its own (k6's and the runner's CPU stay out of its
    event loop); yields its URL and stops it on every way out."""
    proc = subprocess.Popen([sys.executable, __file__, "serve", "--slots", str(slots),
                             "--hold-ms", str(hold_ms)], stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip() or 0)
        if not port:
            raise RuntimeError("the slot server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def plain_k6(url: str, rates: list[int], out: Path, slo_p95_ms: float) -> None:
    from loadproof.compare import Slo, delivery_problem
    from loadproof.execute import run_stages
    from loadproof.metrics import stage_metrics
    from loadproof.plan import make_plan
    from loadproof.progress import Progress

    run = run_stages(make_plan(rates, model="rate", stage_duration="10s", warmup="2s"),
                     label="slot-server-k6", target=url, script="quick", out_dir=out,
                     progress=Progress(quiet=True))
    slo = Slo(slo_p95_ms, 0.99)
    for m in stage_metrics(run):
        ok, why = slo.check(m)
        problem = delivery_problem(m)
        print(f"  k6 at {m.level:>5} req/s: achieved {m.throughput_rps or 0:7.1f} req/s, "
              f"p95 {m.latency_ok.p95_ms or 0:8.1f} ms -> "
              f"{'meets' if ok and problem is None else 'misses'} the SLO ({why}"
              + (f"; {problem}" if problem else "") + ")", flush=True)


def search_once(url: str, out: Path, args: argparse.Namespace,
                **overrides: Any) -> SearchResult:
    from loadproof.capacity import make_settings, run_capacity_search
    from loadproof.progress import Progress

    settings = make_settings(**{"slo_p95_ms": args.slo_p95_ms, "slo_success": 0.99,
                                "min_rate": args.min_rate, "max_rate": 20_000,
                                "trial_duration": args.trial_duration, "warmup": "2s",
                                "cooldown": "2s", "confirm": 1, "budget": "10m",
                                **overrides})
    return run_capacity_search(settings, label="slot-server", target=url, script="quick",
                               out_dir=out, progress=Progress(quiet=not args.verbose))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=["bench", "serve"], default="bench")
    parser.add_argument("--slots", type=int, default=15)
    parser.add_argument("--hold-ms", type=float, default=50.0)
    parser.add_argument("--searches", type=int, default=3)
    parser.add_argument("--slo-p95-ms", type=float, default=250.0)
    parser.add_argument("--min-rate", type=int, default=20)
    parser.add_argument("--trial-duration", default="10s")
    parser.add_argument("--no-generator", action="store_true", help="part 1 only")
    parser.add_argument("--no-known", action="store_true", help="part 2 only")
    parser.add_argument("--verbose", action="store_true", help="print each trial's k6 lines")
    args = parser.parse_args()
    if args.mode == "serve":
        asyncio.run(_serve(args.slots, args.hold_ms, 0))
        return
    known = args.slots * 1000 / args.hold_ms
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          f"{os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}", flush=True)
    print(f"slot server: {args.slots} slots x {args.hold_ms:g} ms -> capacity {known:.0f} req/s "
          f"by construction; SLO p95 <= {args.slo_p95_ms:g} ms, success >= 99%", flush=True)
    if not args.no_known:
        known_capacity(args, known)
    if not args.no_generator:
        generator_limited(args)


def known_capacity(args: argparse.Namespace, known: float) -> None:
    from bench._common import median

    with tempfile.TemporaryDirectory() as tmp, slot_server(args.slots, args.hold_ms) as url:
        out = Path(tmp)
        plain_k6(url, [round(known * 0.9), round(known * 1.1)], out, args.slo_p95_ms)
        errors: list[float] = []
        counts: list[float] = []
        times: list[float] = []
        for attempt in range(1, args.searches + 1):
            started = time.monotonic()
            result = search_once(url, out, args)
            spent = time.monotonic() - started
            capacity = result.capacity
            trials = result.trials
            error = (capacity / known - 1) if capacity is not None else float("nan")
            errors.append(error)
            counts.append(len(trials))
            times.append(spent)
            print(f"search {attempt}: capacity {capacity} req/s, first fail "
                  f"{result.first_fail}, limited by {result.limited_by}, "
                  f"{len(trials)} trials in {spent:.0f} s, error {error:+.1%}", flush=True)
            print("  trials: " + ", ".join(
                f"{t.level}{'+' if t.passed else '-'}" for t in trials), flush=True)
        med_error, med_trials = median(errors), median(counts)
        ok = -0.10 <= med_error <= 0.05 and med_trials <= 15
        print(f"median of {args.searches}: error {med_error:+.1%}, {med_trials:g} trials, "
              f"{median(times):.0f} s per search  "
              f"[{'meets' if ok else 'MISSES'} target: -10%..+5% in <= 15 trials]", flush=True)


def generator_limited(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, slot_server(100_000, 0) as url:
        started = time.monotonic()
        # a generous SLO: the target answers at once, so whatever k6 records beyond that is
        # its own (or the machine's) delay; the search must stop where k6 stops delivering
        result = search_once(url, Path(tmp), args, min_rate=1000, trial_duration="5s",
                             slo_p95_ms=1000, slo_success=0.5)
        spent = time.monotonic() - started
        print(f"generator-limited target (no hold): limited by "
              f"{result.limited_by}, capacity {result.capacity}, lower bound "
              f"{result.lower_bound} req/s, {len(result.trials)} trials in "
              f"{spent:.0f} s  [{'meets' if result.limited_by == 'generator' else 'MISSES'} "
              "target: limited_by generator]", flush=True)
        for trial in result.trials:
            print(f"  {trial.stage}: achieved {trial.achieved_rate or 0:.0f} req/s, p95 "
                  f"{trial.p95_ms or 0:.1f} ms, dropped {trial.dropped}: {trial.reason}"
                  + (f"; limited: {trial.limited}" if trial.limited else ""), flush=True)


if __name__ == "__main__":
    main()
