"""Capacity search: the highest load a target serves within an SLO, found by trials of one run.

An exponential ramp (x2 from the lowest load) until a trial misses the SLO or the highest load
is reached, then bisection between the highest passing and the lowest failing load until they
are within the precision, then the highest pass re-tried (a lucky pass is not the answer). Each
trial is a stage of one run (``t03-1500rps``) with its own requests.parquet; the manifest keeps
the settings, every trial and the result under ``capacity_search``. A trial whose load was not
delivered while the target met the SLO ends the search as limited by the generator: what the
target did is then a lower bound, never a capacity.

The policy (:func:`search`) is pure: it asks a ``run_trial(level)`` callable for trials, so it
is tested without k6; :func:`run_capacity_search` runs the trials with k6 through RunSession.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .compare import (
    DEFAULT_MIN_SUCCESSES,
    ArmCapacity,
    Capacity,
    Slo,
    delivery_problem,
    range_verdict,
)
from .conditions import SATURATED_SHARE
from .errors import LoadproofError, UsageError
from .execute import Interrupted, RunSession
from .metrics import StageMetrics, stage_metrics
from .plan import MAX_LEVEL, Stage, StagePlan, parse_duration
from .progress import Progress
from .rawpipe import Follow, raw_file
from .stats import MIN_REPEATS_FOR_VERDICT
from .store import DEFAULT_RUNS_DIR, Run

LIMITS = ("slo", "generator", "max-rate", "budget")
UNITS = {"rate": "req/s", "vus": "vus"}
DEFAULT_MIN = {"rate": 10, "vus": 1}
DEFAULT_MAX = {"rate": 20_000, "vus": 2_000}
# a failing trial ends early only over this many measured requests (and a second of them)
EARLY_STOP_MIN_REQUESTS = 50
# headroom on the trial's projected request count before a trial is called unable to pass
EARLY_STOP_MARGIN = 1.2
# time a trial costs beyond its warm-up and measured time (k6 start, files saved), until one
# trial has been timed
TRIAL_OVERHEAD_S = 3.0


@dataclass(frozen=True)
class SearchSettings:
    """What ``loadproof capacity`` searches with; every value checked by :func:`make_settings`."""

    slo_p95_ms: float
    slo_success: float
    model: str = "rate"
    min_level: int = 10
    max_level: int = 20_000
    precision: float = 0.05
    trial_duration_s: float = 10.0
    warmup_s: float = 2.0
    cooldown_s: float = 2.0
    confirm: int = 1
    budget_s: float = 600.0
    min_successes: int = DEFAULT_MIN_SUCCESSES

    @property
    def slo(self) -> Slo:
        return Slo(self.slo_p95_ms, self.slo_success, self.min_successes)

    @property
    def unit(self) -> str:
        return UNITS[self.model]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "unit": self.unit}


def make_settings(*, slo_p95_ms: float, slo_success: float, model: str = "rate",
                  min_rate: int | None = None, max_rate: int | None = None,
                  precision: float = 0.05, trial_duration: str | float = "10s",
                  warmup: str | float = "2s", cooldown: str | float = "2s", confirm: int = 1,
                  budget: str | float = "10m") -> SearchSettings:
    """Validate the flags into SearchSettings; every problem is a UsageError naming its flag."""
    if model not in UNITS:
        raise UsageError(f"--model {model!r}: use 'rate' (open model, requests/s) or 'vus' "
                         "(closed model, virtual users)")
    if not slo_p95_ms > 0:
        raise UsageError("--slo-p95-ms must be above 0")
    if not 0 < slo_success <= 1:
        raise UsageError("--slo-success is a share between 0 and 1, e.g. 0.99")
    low = DEFAULT_MIN[model] if min_rate is None else min_rate
    high = DEFAULT_MAX[model] if max_rate is None else max_rate
    for flag, value in (("--min-rate", low), ("--max-rate", high)):
        if not 1 <= value <= MAX_LEVEL:
            raise UsageError(f"{flag} {value} must be a whole number between 1 and {MAX_LEVEL}")
    if high < low:
        raise UsageError(f"--max-rate {high} is below --min-rate {low}")
    if not 0 < precision < 1:
        raise UsageError(f"--precision {precision:g} must be a share between 0 and 1, e.g. 0.05")
    if confirm < 0:
        raise UsageError(f"--confirm {confirm} cannot be negative")
    duration_s = parse_duration(trial_duration, what="--trial-duration")
    if duration_s < 1.0:
        raise UsageError(f"--trial-duration {duration_s:g}s is under the minimum of 1s")
    warmup_s = parse_duration(warmup, what="--warmup")
    cooldown_s = parse_duration(cooldown, what="--cooldown")
    budget_s = parse_duration(budget, what="--budget")
    if budget_s < duration_s + warmup_s:
        raise UsageError(f"--budget {budget_s:g}s does not fit one trial "
                         f"(--warmup + --trial-duration = {duration_s + warmup_s:g}s)")
    return SearchSettings(slo_p95_ms=float(slo_p95_ms), slo_success=float(slo_success),
                          model=model, min_level=low, max_level=high, precision=precision,
                          trial_duration_s=duration_s, warmup_s=warmup_s, cooldown_s=cooldown_s,
                          confirm=confirm, budget_s=budget_s)


@dataclass
class Trial:
    """One trial's load and what it measured; ``passed`` is the SLO met with the load delivered.
    ``limited`` names why the generator (not the target) limited it: the search stops there."""

    number: int
    level: int
    stage: str
    p95_ms: float | None
    success: float | None
    achieved_rate: float | None
    dropped: int | None
    passed: bool
    reason: str
    slo_met: bool = False
    limited: str | None = None
    stopped_early: str | None = None
    requests: int = 0
    # the runner's generator guard (machine or k6 CPU saturated, ...): shown, not decisive
    guard: list[str] = field(default_factory=list)

    def to_dict(self, unit_key: str) -> dict[str, Any]:
        """The trial as the result's JSON gives it (``rate`` or ``vus`` for the load)."""
        return {unit_key: self.level, "p95_ms": self.p95_ms, "success": self.success,
                "achieved_rate": self.achieved_rate, "dropped": self.dropped,
                "pass": self.passed, "stage": self.stage, "reason": self.reason,
                "limited": self.limited, "stopped_early": self.stopped_early,
                "requests": self.requests, "guard": self.guard}


@dataclass
class SearchResult:
    """``capacity``: the highest passing load (confirmed unless the budget ran out first);
    ``first_fail``: the lowest failing load above it; ``lower_bound``: what the target was seen
    to serve when the search could not find a capacity (generator-limited: the highest achieved
    rate, in req/s)."""

    capacity: int | None
    first_fail: int | None
    limited_by: str
    unit: str
    trials: list[Trial]
    confirmed: bool
    lower_bound: float | None
    elapsed_s: float
    note: str
    run_id: str | None = None
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        unit_key = "vus" if self.unit == "vus" else "rate"
        return {"capacity": self.capacity, "first_fail": self.first_fail,
                "limited_by": self.limited_by, "unit": self.unit, "run_id": self.run_id,
                "trials": [t.to_dict(unit_key) for t in self.trials],
                "confirmed": self.confirmed, "lower_bound": self.lower_bound,
                "elapsed_s": round(self.elapsed_s, 1), "note": self.note, "path": self.path}


# ---------------------------------------------------------------------------------------------
# The policy


@dataclass
class _Bracket:
    """What the trials so far say about each load: a load passes when every trial at it passed."""

    trials: list[Trial] = field(default_factory=list)

    def lowest_fail(self) -> int | None:
        return min((t.level for t in self.trials if not t.passed), default=None)

    def best_pass(self) -> int | None:
        fail = self.lowest_fail()
        return max((t.level for t in self.trials if t.passed
                    and (fail is None or t.level < fail)), default=None)

    def tries(self, level: int) -> int:
        return sum(1 for t in self.trials if t.level == level)


def next_level(bracket: _Bracket, settings: SearchSettings) -> tuple[int | None, str]:
    """The next load to try, or None with the reason the search is over."""
    if not bracket.trials:
        return settings.min_level, "start"
    fail, best = bracket.lowest_fail(), bracket.best_pass()
    if fail is None:  # still ramping: every trial passed
        assert best is not None
        if best < settings.max_level:
            return min(best * 2, settings.max_level), "ramp"
        if bracket.tries(best) < 1 + settings.confirm:
            return best, "confirm"
        return None, "max-rate"
    if best is None:
        return None, "slo"  # even the lowest load missed the SLO
    if (fail - best) / best > settings.precision and fail - best > 1:
        middle = round(math.sqrt(best * fail))  # bisect on the log scale: precision is relative
        return min(max(middle, best + 1), fail - 1), "bisect"
    if bracket.tries(best) < 1 + settings.confirm:
        return best, "confirm"
    return None, "slo"


def search(settings: SearchSettings, run_trial: Callable[[int, int], Trial], *,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep,
           on_trial: Callable[[Trial, str], None] | None = None) -> SearchResult:
    """Run trials as the policy asks until it has its answer, a trial is limited by the
    generator, or the next trial (and the cool-down before it) does not fit in the budget.
    ``run_trial(number, level)`` runs one trial."""
    bracket = _Bracket()
    started = clock()
    trial_cost = settings.warmup_s + settings.trial_duration_s + TRIAL_OVERHEAD_S
    limited_by: str | None = None
    while True:
        level, why = next_level(bracket, settings)
        if level is None:
            limited_by = why
            break
        cooldown = settings.cooldown_s if bracket.trials else 0.0
        if clock() - started + cooldown + trial_cost > settings.budget_s:
            limited_by = "budget"
            break
        if cooldown > 0:
            sleep(cooldown)  # the previous trial's queue drains
        before = clock()
        trial = run_trial(len(bracket.trials) + 1, level)
        if trial.stopped_early is None:  # a full trial's cost, overheads included
            trial_cost = max(clock() - before, settings.warmup_s + settings.trial_duration_s)
        bracket.trials.append(trial)
        if on_trial is not None:
            on_trial(trial, why)
        if trial.limited is not None:
            limited_by = "generator"
            break
    return _result(bracket, settings, limited_by, clock() - started)


def _result(bracket: _Bracket, settings: SearchSettings, limited_by: str,
            elapsed_s: float) -> SearchResult:
    unit = settings.unit
    fail, best = bracket.lowest_fail(), bracket.best_pass()
    trials = bracket.trials
    if limited_by == "generator":
        last = trials[-1]
        served = [t.achieved_rate for t in trials if t.achieved_rate is not None
                  and t.slo_met]
        bound = max(served, default=None)
        note = (f"the load generator limited trial {last.number} ({last.level} {unit}): "
                f"{last.limited}. The target served "
                + (f"at least {bound:.0f} req/s within the SLO" if bound is not None
                   else "no measured load within the SLO")
                + "; that is a lower bound, not its capacity (use a faster or second "
                  "generator machine)")
        return SearchResult(None, None, "generator", unit, trials, False, bound, elapsed_s,
                            note)
    confirmed = best is not None and bracket.tries(best) >= 1 + settings.confirm
    if best is None:
        note = (f"even the lowest load, {settings.min_level} {unit}, missed the SLO: capacity "
                "is below it (lower --min-rate)" if fail is not None
                else "the budget ended before any trial")
    elif limited_by == "max-rate":
        note = (f"the target met the SLO at --max-rate {settings.max_level} {unit}: capacity "
                "is at least that (raise --max-rate)")
    elif limited_by == "budget":
        note = (f"the budget ran out: capacity lies between {best} and "
                + (f"{fail} {unit}" if fail is not None else f"an untested higher load ({unit})")
                + ("" if confirmed else f"; {best} {unit} passed but was not confirmed"))
    else:
        note = (f"capacity lies between {best} (met the SLO in {bracket.tries(best)} "
                f"trial(s)) and {fail} {unit} (missed it)")
    return SearchResult(best, fail, limited_by, unit, trials, confirmed,
                        float(best) if best is not None else None, elapsed_s, note)


# ---------------------------------------------------------------------------------------------
# Trials with k6


@dataclass(frozen=True)
class TrialStage(Stage):
    """A stage of a capacity-search run: keyed by its trial number (``t03-1500rps``)."""

    @property
    def key(self) -> str:
        unit = "vus" if self.model == "vus" else "rps"
        return f"t{self.index:02d}-{self.level}{unit}"

    @property
    def label(self) -> str:
        unit = "users" if self.model == "vus" else "req/s"
        return f"trial {self.index} ({self.level} {unit})"


class EarlyStop:
    """Follows a trial's raw k6 CSV and says when the trial can no longer pass: more requests
    already failed, or more successful ones were slower than the SLO's p95, than the SLO allows
    over the trial's projected request count (with EARLY_STOP_MARGIN headroom)."""

    def __init__(self, raw_csv: Path | list[Path], settings: SearchSettings,
                 stage: Stage) -> None:
        # one raw CSV per k6 generator (several with --generators): counted together
        self.raw_csvs = [raw_csv] if isinstance(raw_csv, Path) else list(raw_csv)
        self.settings = settings
        self.stage = stage
        self.follows = [Follow(path) for path in self.raw_csvs]
        self.partials = [b""] * len(self.raw_csvs)
        self.headers: list[dict[str, int] | None] = [None] * len(self.raw_csvs)
        self.columns: dict[str, int] | None = None
        self.requests = self.iterations = self.bad = self.slow = 0
        self.first_us: int | None = None
        self.last_us: int | None = None

    def _read(self) -> None:
        for number in range(len(self.raw_csvs)):
            self._read_one(number)

    def _read_one(self, number: int) -> None:
        chunk = self.follows[number].read()  # plain or gzipped (runner/rawpipe.py)
        data = self.partials[number] + chunk
        cut = data.rfind(b"\n") + 1
        self.partials[number], data = data[cut:], data[:cut]
        lines = data.decode(errors="replace").splitlines()
        if self.headers[number] is None and lines:
            self.headers[number] = {name: i for i, name in
                                    enumerate(next(csv.reader([lines[0]])))}
            self.columns = self.columns or self.headers[number]
            lines = lines[1:]
        if self.headers[number] is None:
            return
        wanted = [line for line in lines if line.startswith(("http_req_duration,", "iterations,"))]
        if not wanted:
            return
        col = self.headers[number]
        assert col is not None
        for row in csv.reader(io.StringIO("\n".join(wanted))):
            if len(row) < len(col) or row[col["scenario"]] == "warmup":
                continue
            if row[0] == "iterations":
                self.iterations += 1
                continue
            self.requests += 1
            stamp = int(row[col["timestamp"]])
            self.first_us = stamp if self.first_us is None else min(self.first_us, stamp)
            self.last_us = stamp if self.last_us is None else max(self.last_us, stamp)
            status = row[col["status"]]
            if not status.startswith("2") or len(status) != 3:
                self.bad += 1
            elif float(row[col["metric_value"]]) > self.settings.slo_p95_ms:
                self.slow += 1

    def projected_requests(self) -> float | None:
        """An upper estimate of the trial's measured requests when it ends."""
        if self.first_us is None or self.last_us is None or self.last_us <= self.first_us:
            return None
        if self.stage.model == "rate" and self.iterations:
            per_iteration = self.requests / self.iterations
            planned = self.stage.level * self.stage.duration_s * per_iteration
        else:
            seen_s = (self.last_us - self.first_us) / 1e6
            planned = self.requests / seen_s * self.stage.duration_s
        return max(float(self.requests), planned) * EARLY_STOP_MARGIN

    def __call__(self, elapsed_s: float) -> str | None:
        if self.columns is not None and "scenario" not in self.columns:
            return None  # a script without scenario tags: warm-up cannot be told apart
        self._read()
        if self.requests < EARLY_STOP_MIN_REQUESTS or self.first_us is None \
                or self.last_us is None or self.last_us - self.first_us < 1_000_000:
            return None
        projected = self.projected_requests()
        if projected is None:
            return None
        allowed_bad = (1 - self.settings.slo_success) * projected
        if self.bad > allowed_bad:
            return (f"{self.bad} of {self.requests} requests failed, more than the "
                    f"{allowed_bad:.0f} the success SLO allows over the ~{projected:.0f} "
                    "requests the trial would make")
        allowed_slow = 0.05 * projected
        if self.slow > allowed_slow:
            return (f"{self.slow} successful requests took over {self.settings.slo_p95_ms:g} ms, "
                    f"more than the 5% ({allowed_slow:.0f}) of the ~{projected:.0f} requests "
                    "the trial would make: its p95 cannot meet the SLO")
        return None


def judge(m: StageMetrics, record: dict[str, Any], settings: SearchSettings) -> Trial:
    """A trial's figures, and whether it passed: the SLO met with the load delivered."""
    ok, why = settings.slo.check(m)
    problem = delivery_problem(m)
    generator = record.get("generator") or {}
    k6_cores, cores = generator.get("k6_cpu_cores"), generator.get("cores")
    k6_saturated = (k6_cores is not None and cores
                    and k6_cores >= SATURATED_SHARE * cores)
    limited = None
    if problem is not None and ok:
        limited = f"load not delivered ({problem}) while the target met the SLO"
    elif not ok and k6_saturated:
        limited = (f"k6 used {k6_cores:.2f} of {cores} cores: the missed SLO may be the "
                   "generator's own delay")
    reason = ("meets SLO: " if ok else "misses SLO: ") + why
    if problem is not None:
        reason += f"; load not delivered: {problem}"
    return Trial(number=m.index, level=int(m.level or 0), stage=m.key,
                 p95_ms=m.latency_ok.p95_ms, success=m.success_rate,
                 achieved_rate=m.throughput_rps, dropped=m.dropped_iterations,
                 passed=ok and problem is None, reason=reason, slo_met=ok, limited=limited,
                 stopped_early=record.get("stopped_early"), requests=m.requests,
                 guard=list(generator.get("reasons") or []))


class TrialError(LoadproofError):
    """A trial k6 could not run (script error, bad configuration): the search cannot go on."""


@dataclass
class _TrialRunner:
    session: RunSession
    settings: SearchSettings
    offset: int = 0  # trials of earlier searches in the same run

    def __call__(self, number: int, level: int) -> Trial:
        run = self.session.run
        assert run is not None
        number += self.offset
        stage = TrialStage(number, level, self.settings.model, self.settings.trial_duration_s,
                           self.settings.warmup_s)
        # the runner keeps each stage's k6 CSV at stages/r<repeat>-<key>/raw.csv(.gz), or one
        # per generator at stages/r<repeat>-<key>/shards/<i>/raw.csv(.gz)
        stage_dir = run.path / "stages" / f"r1-{stage.key}"
        count = self.session.generators
        mode = self.session.raw_output
        raws = ([raw_file(stage_dir / "shards" / str(i), mode) for i in range(count)]
                if count > 1 else [raw_file(stage_dir, mode)])
        watch = EarlyStop(raws, self.settings, stage)
        record = self.session.run_stage(stage, 1, watch)
        run.manifest["plan"]["levels"] = [s["level"] for s in run.stages]
        if record.get("status") != "complete" or not record.get("requests_file"):
            run.save()
            raise TrialError(f"trial {number} ({level} {self.settings.unit}) did not complete: "
                             f"{record.get('status_reason') or record.get('status')}"
                             + (f"\n{record['k6_message']}" if record.get("k6_message") else ""),
                             path=run.path)
        if record.get("stopped_early"):
            _guard_over_measured_window(run, record)
        run.save()
        one = Run(run.path, {**run.manifest, "stages": [record]})
        return judge(stage_metrics(one)[0], record, self.settings)


def _guard_over_measured_window(run: Run, record: dict[str, Any]) -> None:
    """A trial stopped early: the runner's generator guard judged its delivered load against
    the planned duration; judge it again over the time it measured (``measured_s``)."""
    import polars as pl

    from .conditions import generator_guard

    measured = record.get("measured_s")
    if not record.get("resources_file") or not measured:
        return
    rows = pl.read_parquet(run.path / record["resources_file"]).with_columns(
        pl.col("process").cast(pl.String)).rows()
    record["generator"] = generator_guard(rows, record.get("conditions") or {},
                                          {**record, "duration_s": measured},
                                          run.path / "stages" / record["dir"] / "k6.log")


def trial_line(trial: Trial, why: str, unit: str) -> str:
    """The progress line a finished trial prints."""
    p95 = f"{trial.p95_ms:.1f} ms" if trial.p95_ms is not None else "n/a"
    success = f"{trial.success:.2%}" if trial.success is not None else "n/a"
    achieved = f"{trial.achieved_rate:.1f} req/s" if trial.achieved_rate is not None else "n/a"
    mark = "PASS" if trial.passed else ("LIMITED" if trial.limited else "FAIL")
    return (f"trial {trial.number} ({why}) {trial.level} {unit}: p95 {p95}, success {success}, "
            f"achieved {achieved}, dropped {trial.dropped if trial.dropped is not None else 'n/a'}"
            f" -> {mark}" + (f" (stopped early: {trial.stopped_early})"
                             if trial.stopped_early else ""))


class CapacitySearchSession:
    """One arm's capacity search(es) as one stored run. ``search_once`` runs a whole search;
    called again (a pipeline's repeats, interleaved with the other arm) it runs another in the
    same run, its trials numbered on from the last. The manifest's ``capacity_search`` keeps
    every trial (with its ``search`` number), each search's result under ``searches`` and their
    envelope as ``result``: the lowest capacity and the highest first fail, so the stored range
    covers what every search found."""

    def __init__(self, settings: SearchSettings, *, label: str, target: str | None = None,
                 profile: str | None = None, script: str | None = None,
                 out_dir: Path | str = DEFAULT_RUNS_DIR, progress: Progress | None = None,
                 service_overrides: dict[str, Any] | None = None,
                 generators: int = 1) -> None:
        self.settings = settings
        self.progress = progress or Progress()
        script = script or ("submit" if profile is not None else "quick")
        plan = StagePlan(model=settings.model, levels=(settings.min_level,),
                         duration_s=settings.trial_duration_s, warmup_s=settings.warmup_s)
        self.session = RunSession(plan=plan, label=label, target=target, profile=profile,
                                  script=script, out_dir=Path(out_dir), progress=self.progress,
                                  service_overrides=dict(service_overrides or {}),
                                  generators=generators)
        self.results: list[SearchResult] = []

    @property
    def run(self) -> Run:
        assert self.session.run is not None, "open() first"
        return self.session.run

    @property
    def label(self) -> str:
        return self.session.label

    def run_repeat(self, number: int) -> None:
        """A pipeline's repeat ``number``: one more whole search."""
        self.search_once()

    def open(self) -> Run:
        run = self.session.open()
        run.manifest["capacity_search"] = {"settings": self.settings.to_dict(), "trials": [],
                                           "searches": [], "result": None}
        run.save()
        return run

    def search_once(self) -> SearchResult:
        """Run one whole search; Ctrl-C and errors propagate (the caller closes the run)."""
        run, number = self.run, len(self.results) + 1
        data = run.manifest["capacity_search"]
        unit, unit_key = self.settings.unit, "vus" if self.settings.model == "vus" else "rate"

        def on_trial(trial: Trial, why: str) -> None:
            data["trials"].append({**trial.to_dict(unit_key), "search": number})
            run.save()
            self.progress.line(trial_line(trial, why, unit))

        self.session.start_service()  # before the budget's clock starts
        runner = _TrialRunner(self.session, self.settings, offset=len(data["trials"]))
        result = search(self.settings, runner, on_trial=on_trial)
        result.run_id, result.path = run.run_id, str(run.path)
        self.results.append(result)
        data["searches"].append(
            {k: v for k, v in result.to_dict().items() if k not in ("trials", "path")})
        data["result"] = envelope(data["searches"])
        run.save()
        return result

    def stop_service(self) -> dict[str, Any] | None:
        return self.session.stop_service()

    def close(self, status: str | None = None, reason: str | None = None) -> Run:
        if status == "incomplete" and self.run.manifest["capacity_search"]["result"] is None:
            self.run.manifest["capacity_search"]["result"] = {"interrupted": True}
        if status is None:
            status = "complete" if self.results else "failed"
        return self.session.close(status, reason)


def envelope(searches: list[dict[str, Any]]) -> dict[str, Any]:
    """Several searches of one arm as one result: capacity the lowest any search found, first
    fail the highest (None when any search found no failing load), limited by the generator
    when any search was, else by the first non-SLO limit. One search: its own result."""
    if len(searches) == 1:
        return dict(searches[0])
    limits = [s["limited_by"] for s in searches]
    limited_by = ("generator" if "generator" in limits else
                  next((x for x in limits if x != "slo"), "slo"))
    capacities = [s["capacity"] for s in searches]
    fails = [s["first_fail"] for s in searches]
    capacity = None if None in capacities else min(capacities)
    first_fail = None if None in fails else max(fails)
    bounds = [s["lower_bound"] for s in searches if s.get("lower_bound") is not None]
    return {"capacity": capacity, "first_fail": first_fail, "limited_by": limited_by,
            "unit": searches[0]["unit"], "run_id": searches[0].get("run_id"),
            "confirmed": all(s.get("confirmed") for s in searches),
            "lower_bound": min(bounds) if bounds else None,
            "elapsed_s": round(sum(s.get("elapsed_s") or 0.0 for s in searches), 1),
            "searches": len(searches),
            "note": (f"{len(searches)} searches: capacities "
                     + ", ".join("—" if c is None else str(c) for c in capacities)
                     + "; first fails " + ", ".join("—" if f is None else str(f) for f in fails)
                     + "; the stored range spans them all")}


def run_capacity_search(settings: SearchSettings, *, label: str, target: str | None = None,
                        profile: str | None = None, script: str | None = None,
                        out_dir: Path | str = DEFAULT_RUNS_DIR,
                        progress: Progress | None = None, generators: int = 1) -> SearchResult:
    """Search the capacity of a target URL or a reference-service profile as one stored run.

    Ctrl-C keeps the finished trials (and the search so far) and raises Interrupted."""
    searching = CapacitySearchSession(settings, label=label, target=target, profile=profile,
                                      script=script, out_dir=out_dir, progress=progress,
                                      generators=generators)
    run = searching.open()
    try:
        result = searching.search_once()
    except KeyboardInterrupt:
        searching.close("incomplete", "interrupted (Ctrl-C); finished trials are kept")
        raise Interrupted(run) from None
    except BaseException as exc:
        searching.close("failed", f"{exc.__class__.__name__}: {exc}")
        raise
    searching.close("complete")
    return result


def search_of(run: Run) -> dict[str, Any] | None:
    """The stored search of a capacity-search run (settings, trials, result), or None."""
    data = run.manifest.get("capacity_search")
    return data if isinstance(data, dict) else None


def render_text(result: SearchResult) -> str:
    """The result as ``loadproof capacity`` prints it."""
    unit = result.unit
    if result.capacity is not None:
        head = f"capacity: {result.capacity} {unit}" + ("" if result.confirmed
                                                         else " (not confirmed)")
    elif result.limited_by == "generator" and result.lower_bound is not None:
        head = f"capacity: not measured (at least {result.lower_bound:.0f} req/s)"
    else:
        head = "capacity: not found"
    lines = [head,
             f"first fail: {result.first_fail} {unit}" if result.first_fail is not None
             else "first fail: none",
             f"limited by: {result.limited_by}",
             result.note,
             f"{len(result.trials)} trials in {result.elapsed_s:.0f} s:"]
    for t in result.trials:
        p95 = f"{t.p95_ms:8.1f}" if t.p95_ms is not None else "     n/a"
        success = f"{t.success:8.2%}" if t.success is not None else "     n/a"
        achieved = f"{t.achieved_rate:9.1f}" if t.achieved_rate is not None else "      n/a"
        mark = "pass" if t.passed else ("limited" if t.limited else "FAIL")
        lines.append(f"  {t.stage:<16} p95 {p95} ms  success {success}  achieved {achieved} "
                     f"req/s  dropped {t.dropped if t.dropped is not None else 'n/a'}  {mark}"
                     + ("  (stopped early)" if t.stopped_early else ""))
    guarded = [t for t in result.trials if t.guard]
    if guarded:
        lines.append(f"warning: the generator guard fired in {len(guarded)} of "
                     f"{len(result.trials)} trials (e.g. {guarded[0].guard[0]}): k6 or the "
                     "machine may have bent these figures")
    lines.append(f"run: {result.path}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Comparison of two searches


def _arm_of_search(run: Run) -> tuple[ArmCapacity, dict[str, Any]] | None:
    """A finished search run as an ArmCapacity: capacity lies in [capacity, first_fail)."""
    data = search_of(run)
    result = (data or {}).get("result") or {}
    if not data or "limited_by" not in result:
        return None
    trials = data.get("trials") or []
    checks = {t["stage"]: ("meets SLO: " if t["pass"] else "misses SLO: ") + t.get("reason", "")
              for t in trials}
    level, upper = result.get("capacity"), result.get("first_fail")
    if result["limited_by"] == "generator":
        # the target was never driven to its limit: the highest passing load is a floor only
        level = max((t.get("rate", t.get("vus")) for t in trials if t["pass"]), default=None)
        upper = None
    bound = "none" if level is None else ("at_least" if upper is None else "exact")
    return ArmCapacity(level, bound, checks, upper=upper), data


def search_capacity(baseline: Run, candidate: Run) -> Capacity | None:
    """The capacity ratio of two capacity-search runs, from their brackets: each arm's capacity
    lies in [pass, first fail), so the ratio lies between candidate pass / baseline fail and
    candidate fail / baseline pass; a verdict only when that whole interval is above or below 1.
    None when either run is not a finished search (the caller then reads the stages as a grid).
    """
    base, cand = _arm_of_search(baseline), _arm_of_search(candidate)
    if base is None or cand is None:
        return None
    (b, base_data), (c, cand_data) = base, cand
    base_settings, cand_settings = base_data["settings"], cand_data["settings"]
    slo = Slo(base_settings["slo_p95_ms"], base_settings["slo_success"],
              base_settings.get("min_successes", DEFAULT_MIN_SUCCESSES))
    capacity = Capacity(slo, base_settings["model"], b, c, None, None, None, basis="search")
    if base_settings["model"] != cand_settings["model"]:
        capacity.reason = "the searches used different load models: no capacity ratio"
        return capacity
    if (base_settings["slo_p95_ms"], base_settings["slo_success"]) != \
            (cand_settings["slo_p95_ms"], cand_settings["slo_success"]):
        capacity.reason = "the searches used different SLOs: no capacity ratio"
        return capacity
    generator = [arm for arm, data in (("baseline", base_data), ("candidate", cand_data))
                 if data["result"]["limited_by"] == "generator"]
    note = (f" ({' and '.join(generator)} limited by the load generator: a lower bound)"
            if generator else "")
    if b.level is None:
        capacity.reason = "the baseline met the SLO at no trial: no capacity ratio"
        return capacity
    if c.level is None:
        capacity.ratio, capacity.ratio_bound, capacity.ratio_low = 0.0, "exact", 0.0
        capacity.ratio_high = c.upper / b.level if c.upper is not None else None
        capacity.reason = "the candidate met the SLO at no trial"
    elif b.upper is None and c.upper is None:
        capacity.reason = ("neither search found a failing load (max-rate, budget or the "
                           "generator ended them): no capacity ratio" + note)
        return capacity
    else:
        capacity.ratio = c.level / b.level
        capacity.ratio_low = c.level / b.upper if b.upper is not None else 0.0
        capacity.ratio_high = c.upper / b.level if c.upper is not None else None
        capacity.ratio_bound = ("at_most" if b.upper is None else
                                "at_least" if c.upper is None else "exact")
        if note:
            capacity.reason = "from capacity searches" + note
    # one search per arm is one noisy measurement: its bracket is the search's precision, not
    # the run-to-run spread, so a verdict needs replicated searches whose ranges all separate
    searches = min(len(base_data.get("searches") or [None]),
                   len(cand_data.get("searches") or [None]))
    capacity.verdict = ("not replicated" if searches < MIN_REPEATS_FOR_VERDICT
                        else range_verdict(capacity))
    return capacity


def trace_rows(run: Run) -> list[dict[str, Any]]:
    """A search run's trials in order, as the report's search trace shows them: the load, p95
    against the SLO, the success share, the achieved rate and the mark."""
    data = search_of(run)
    if not data:
        return []
    settings, rows = data["settings"], []
    unit, slo_ms = settings["unit"], float(settings["slo_p95_ms"])
    for t in data.get("trials") or []:
        p95 = t.get("p95_ms")
        mark = "pass" if t["pass"] else ("limited by the generator" if t.get("limited")
                                         else "fail")
        rows.append({"trial": t["stage"], f"load ({unit})": t.get("rate", t.get("vus")),
                     "p95 (ms)": p95,
                     f"p95 ≤ {slo_ms:g} ms": "—" if p95 is None else
                     ("yes" if p95 <= slo_ms else "no"),
                     "success": t.get("success"), "achieved (req/s)": t.get("achieved_rate"),
                     "result": mark + (" (stopped early)" if t.get("stopped_early") else "")})
    return rows
