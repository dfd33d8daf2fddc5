"""Capacity search: the policy against loads of known outcome (no k6), the early stop on a k6
CSV, the judgement of a stored trial, the flags, and real searches with k6 against a slot
server on loopback whose capacity is known by construction."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from loadproof import cli
from loadproof.capacity import (
    EarlyStop,
    SearchSettings,
    Trial,
    TrialStage,
    judge,
    make_settings,
    render_text,
    run_capacity_search,
    search,
)
from loadproof.compare import compare_runs
from loadproof.errors import UsageError
from loadproof.metrics import stage_metrics
from loadproof.progress import Progress
from loadproof.store import Run, load_run

from bench.capacity_search import slot_server
from tests.helpers import make_run

QUIET = Progress(quiet=True)
RESULT_KEYS = {"capacity", "first_fail", "limited_by", "unit", "run_id", "trials"}
TRIAL_KEYS = {"rate", "p95_ms", "success", "achieved_rate", "dropped", "pass", "stage"}


def settings(**changes: object) -> SearchSettings:
    values: dict[str, object] = {"slo_p95_ms": 100, "slo_success": 0.99, "min_rate": 10,
                                 "max_rate": 20_000, "trial_duration": "10s", "warmup": "0s",
                                 "cooldown": "0s", "budget": "1h"}
    values.update(changes)
    return make_settings(**values)  # type: ignore[arg-type]


def trial(number: int, level: int, passed: bool, *, limited: str | None = None,
          achieved: float | None = None) -> Trial:
    return Trial(number=number, level=level, stage=f"t{number:02d}-{level}rps", p95_ms=50.0,
                 success=1.0, achieved_rate=achieved if achieved is not None else float(level),
                 dropped=0, passed=passed, reason="", slo_met=passed or limited is not None,
                 limited=limited)


def threshold(capacity: int, noisy: Callable[[int, int], bool] | None = None) \
        -> tuple[Callable[[int, int], Trial], list[int]]:
    """A target that meets the SLO at every load up to ``capacity``; ``noisy(number, level)``
    may flip a trial to a miss."""
    levels: list[int] = []

    def run_trial(number: int, level: int) -> Trial:
        levels.append(level)
        passed = level <= capacity and not (noisy is not None and noisy(number, level))
        return trial(number, level, passed)

    return run_trial, levels


class FakeClock:
    def __init__(self, per_trial_s: float) -> None:
        self.now = 0.0
        self.per_trial_s = per_trial_s

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# --- the policy ------------------------------------------------------------------------------

@pytest.mark.parametrize("capacity", [13, 300, 1234, 9_000])
def test_search_brackets_a_known_capacity_within_the_precision(capacity: int) -> None:
    run_trial, levels = threshold(capacity)
    result = search(settings(), run_trial, sleep=lambda s: None)
    assert result.limited_by == "slo"
    assert result.capacity is not None and result.first_fail is not None
    assert result.capacity <= capacity < result.first_fail
    assert (result.first_fail - result.capacity) / result.capacity <= 0.05 \
        or result.first_fail - result.capacity == 1
    assert result.confirmed
    assert levels.count(result.capacity) == 2  # the pass and its confirmation
    ramp = [10 * 2**i for i in range(12) if 10 * 2**(i - 1) <= capacity]
    assert levels[:len(ramp)] == ramp  # doubling from --min-rate up to the first miss
    assert len(levels) <= len(ramp) + 5 + 1  # log2(log 2 / log 1.05) < 5 bisections, 1 confirm


def test_a_failed_confirmation_moves_the_answer_down() -> None:
    # the first confirmation of the highest pass misses: that load is not the capacity
    seen: dict[int, int] = {}

    def noisy(number: int, level: int) -> bool:
        seen[level] = seen.get(level, 0) + 1
        return seen[level] == 2 and level > 280

    run_trial, levels = threshold(300, noisy)
    result = search(settings(), run_trial, sleep=lambda s: None)
    assert result.capacity is not None and result.first_fail is not None
    assert result.capacity < result.first_fail <= 300
    flipped = [lvl for lvl, n in seen.items() if n >= 2 and lvl > 280]
    assert flipped and result.first_fail == min(flipped)
    assert result.confirmed and levels.count(result.capacity) == 2


def test_every_load_passing_ends_at_max_rate() -> None:
    run_trial, levels = threshold(10**9)
    result = search(settings(max_rate=100), run_trial, sleep=lambda s: None)
    assert (result.limited_by, result.capacity, result.first_fail) == ("max-rate", 100, None)
    assert levels == [10, 20, 40, 80, 100, 100]


def test_the_lowest_load_missing_gives_no_capacity() -> None:
    run_trial, levels = threshold(5)
    result = search(settings(), run_trial, sleep=lambda s: None)
    assert (result.capacity, result.first_fail, result.limited_by) == (None, 10, "slo")
    assert levels == [10]
    assert "below" in result.note


def test_confirm_zero_takes_no_second_trial() -> None:
    run_trial, levels = threshold(300)
    result = search(settings(confirm=0), run_trial, sleep=lambda s: None)
    assert result.capacity is not None and levels.count(result.capacity) == 1


def test_budget_stops_with_the_bracket_so_far() -> None:
    clock = FakeClock(per_trial_s=12.0)
    inner, levels = threshold(1000)

    def run_trial(number: int, level: int) -> Trial:
        clock.now += clock.per_trial_s
        return inner(number, level)

    result = search(settings(budget="60s", cooldown="1s"), run_trial, clock=clock,
                    sleep=clock.sleep)
    assert result.limited_by == "budget"
    assert clock.now <= 60
    assert levels == [10, 20, 40, 80]  # a fifth trial (1 s cool-down + 12 s) would not fit
    assert result.capacity == 80 and result.first_fail is None
    assert not result.confirmed and "budget" in result.note


def test_a_generator_limited_trial_ends_the_search_without_a_capacity() -> None:
    def run_trial(number: int, level: int) -> Trial:
        if level >= 80:
            return trial(number, level, False, limited="load not delivered", achieved=71.5)
        return trial(number, level, True)

    result = search(settings(), run_trial, sleep=lambda s: None)
    assert result.limited_by == "generator"
    assert result.capacity is None and result.first_fail is None
    assert result.lower_bound == 71.5
    assert [t.level for t in result.trials] == [10, 20, 40, 80]


# --- judging a stored trial -----------------------------------------------------------------

def test_undelivered_load_with_the_slo_met_is_the_generators_limit(tmp_path: Path) -> None:
    # 400 req/s planned for 10 s, 3,000 requests arrived: 75% of the plan, all fast and 2xx
    run = make_run(tmp_path, "low", {"t01-400rps": (400, [5.0] * 3000, [200] * 3000)},
                   model="rate", duration_s=10.0)
    (m,) = stage_metrics(run)
    result = judge(m, run.stages[0], settings())
    assert not result.passed and result.slo_met
    assert result.limited is not None and "not delivered" in result.limited


def test_undelivered_load_with_the_slo_missed_is_a_failure(tmp_path: Path) -> None:
    run = make_run(tmp_path, "slow", {"t01-400rps": (400, [500.0] * 3000, [200] * 3000)},
                   model="rate", duration_s=10.0)
    (m,) = stage_metrics(run)
    result = judge(m, run.stages[0], settings())
    assert not result.passed and not result.slo_met and result.limited is None


def test_delivered_load_within_the_slo_passes(tmp_path: Path) -> None:
    run = make_run(tmp_path, "ok", {"t01-100rps": (100, [20.0] * 1000, [200] * 1000)},
                   model="rate", duration_s=10.0)
    (m,) = stage_metrics(run)
    result = judge(m, run.stages[0], settings())
    assert result.passed and result.limited is None
    assert (result.level, result.stage, result.requests) == (100, "t01-100rps", 1000)


# --- the early stop ------------------------------------------------------------------------

HEADER = ("metric_name,timestamp,metric_value,check,error,error_code,expected_response,group,"
          "method,name,proto,scenario,service,status,subproto,tls_version,url,extra_tags,"
          "metadata\n")


def csv_rows(n: int, *, ms: float, status: int = 200, scenario: str = "main",
             start_us: int = 1_700_000_000_000_000, rate: int = 100) -> str:
    rows = []
    for i in range(n):
        stamp = start_us + i * 1_000_000 // rate
        rows.append(f"http_req_duration,{stamp},{ms},,,,true,,GET,quick,,{scenario},,{status},,,,,\n")
        rows.append(f"iterations,{stamp},1,,,,,,,,,{scenario},,,,,,,\n")
    return "".join(rows)


def test_early_stop_waits_while_the_trial_can_still_pass(tmp_path: Path) -> None:
    raw = tmp_path / "raw.csv"
    stage = TrialStage(1, 100, "rate", 10.0, 2.0)
    stop = EarlyStop(raw, settings(), stage)
    assert stop(1.0) is None  # no file yet
    # slow warm-up requests and 40 slow measured ones out of ~1,000 planned: can still pass
    raw.write_text(HEADER + csv_rows(200, ms=900.0, scenario="warmup")
                   + csv_rows(150, ms=20.0) + csv_rows(40, ms=900.0, start_us=1_700_000_002_000_000))
    assert stop(3.0) is None
    assert stop.requests == 190 and stop.slow == 40


def test_early_stop_ends_a_trial_whose_p95_cannot_meet_the_slo(tmp_path: Path) -> None:
    raw = tmp_path / "raw.csv"
    stop = EarlyStop(raw, settings(), TrialStage(1, 100, "rate", 10.0, 0.0))
    raw.write_text(HEADER + csv_rows(150, ms=900.0))
    why = stop(2.0)
    assert why is not None and "p95 cannot meet" in why


def test_early_stop_ends_a_trial_whose_success_cannot_meet_the_slo(tmp_path: Path) -> None:
    raw = tmp_path / "raw.csv"
    stop = EarlyStop(raw, settings(), TrialStage(1, 100, "rate", 10.0, 0.0))
    with raw.open("w") as handle:
        handle.write(HEADER + csv_rows(100, ms=10.0))
        handle.flush()
        assert stop(1.5) is None
        handle.write(csv_rows(20, ms=10.0, status=503, start_us=1_700_000_001_000_000))
    why = stop(2.5)
    assert why is not None and "failed" in why


# --- flags ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "flag"), [
    ({"precision": 0}, "--precision"),
    ({"precision": 1.5}, "--precision"),
    ({"min_rate": 0}, "--min-rate"),
    ({"min_rate": 50, "max_rate": 10}, "--max-rate"),
    ({"trial_duration": "0.5s"}, "--trial-duration"),
    ({"trial_duration": "ten"}, "--trial-duration"),
    ({"confirm": -1}, "--confirm"),
    ({"budget": "5s"}, "--budget"),
    ({"cooldown": "x"}, "--cooldown"),
    ({"slo_success": 1.5}, "--slo-success"),
    ({"slo_p95_ms": 0}, "--slo-p95-ms"),
])
def test_bad_settings_name_their_flag(changes: dict[str, object], flag: str) -> None:
    with pytest.raises(UsageError, match=flag):
        settings(**changes)


@pytest.mark.parametrize(("argv", "flag"), [
    (["--precision", "0"], "--precision"),
    (["--min-rate", "abc"], "--min-rate"),
    (["--budget", "soon"], "--budget"),
    (["--model", "users"], "--model"),
    (["--generators", "0"], "--generators"),
])
def test_bad_flags_exit_2_naming_the_flag(argv: list[str], flag: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    base = ["capacity", "--target", "http://127.0.0.1:9", "--label", "x", "--slo-p95-ms", "100",
            "--slo-success", "0.99", "--out", str(tmp_path)]
    try:
        code = cli.main(base + argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    assert code == 2
    assert flag in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run was created


def test_an_unreachable_target_exits_4_before_any_trial(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["capacity", "--target", "http://127.0.0.1:9", "--label", "x",
                     "--slo-p95-ms", "100", "--slo-success", "0.99", "--out", str(tmp_path)])
    assert code == 4
    assert "unreachable" in capsys.readouterr().err


# --- real searches with k6 ------------------------------------------------------------------

SLOTS, HOLD_MS = 15, 50.0  # capacity 300 req/s by construction


@pytest.mark.slow
def test_search_finds_the_slot_servers_capacity(runs_dir: Path) -> None:
    known = SLOTS * 1000 / HOLD_MS
    with slot_server(SLOTS, HOLD_MS) as url:
        result = run_capacity_search(
            # from 120 req/s the x2 ramp passes the capacity at its third trial (one trial
            # fewer than from 60), then bisects to 10%
            settings(slo_p95_ms=150, min_rate=120, trial_duration="2s", warmup="1s",
                     cooldown="1s", precision=0.1, budget="3m"),
            label="slots", target=url, script="quick", out_dir=runs_dir, progress=QUIET)
    assert result.limited_by == "slo", result.note
    assert result.capacity is not None and result.first_fail is not None
    # a loose bracket: 2 s trials on a shared machine, and a server whose sleeps run late
    assert 0.6 * known <= result.capacity <= 1.1 * known
    assert result.first_fail <= 1.5 * known
    run = load_run(result.path or "")
    assert run.status == "complete"
    stored = run.manifest["capacity_search"]
    assert stored["settings"]["precision"] == 0.1
    assert len(stored["trials"]) == len(result.trials)
    assert stored["result"]["capacity"] == result.capacity
    keys = [s["key"] for s in run.stages]
    assert keys[0] == "t01-120rps" and keys == [t.stage for t in result.trials]
    assert all((run.path / s["requests_file"]).is_file() for s in run.stages)
    assert all(s["status"] == "complete" for s in run.stages)


@pytest.mark.slow
def test_a_target_faster_than_k6_is_limited_by_the_generator(runs_dir: Path) -> None:
    with slot_server(100_000, 0) as url:
        result = run_capacity_search(
            # a generous SLO: the target answers at once, so what k6 records beyond that is
            # k6's own delay; from 2,000 req/s the ramp passes what one k6 here delivers
            settings(slo_p95_ms=5000, slo_success=0.5, min_rate=2000, max_rate=64_000,
                     trial_duration="2s", warmup="0s", budget="2m"),
            label="fast", target=url, script="quick", out_dir=runs_dir, progress=QUIET)
    assert result.limited_by == "generator", [t.reason for t in result.trials]
    assert result.capacity is None
    assert result.lower_bound is not None and 0 < result.lower_bound < 64_000
    assert "lower bound" in result.note


@pytest.mark.slow
def test_cli_json_result_and_budget_stop(runs_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with slot_server(SLOTS, HOLD_MS) as url:
        code = cli.main(["capacity", "--target", url, "--label", "cli", "--slo-p95-ms", "150",
                         "--slo-success", "0.99", "--min-rate", "50", "--trial-duration", "1s",
                         "--warmup", "0s", "--cooldown", "0s", "--budget", "9s",
                         "--script", "quick", "--out", str(runs_dir), "--format", "json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= RESULT_KEYS
    assert result["limited_by"] == "budget" and result["unit"] == "req/s"
    assert result["trials"] and all(set(t) >= TRIAL_KEYS for t in result["trials"])
    assert result["trials"][0]["rate"] == 50 and result["trials"][0]["stage"] == "t01-50rps"
    assert load_run(runs_dir / result["run_id"]).manifest["capacity_search"]["result"][
        "limited_by"] == "budget"


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_exits_130(runs_dir: Path) -> None:
    with slot_server(SLOTS, HOLD_MS) as url:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadproof.cli", "capacity", "--target", url, "--label", "stop",
             "--slo-p95-ms", "150", "--slo-success", "0.99", "--min-rate", "50",
             "--trial-duration", "2s", "--warmup", "0s", "--cooldown", "0s",
             "--out", str(runs_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = list(runs_dir.glob("*/manifest.json"))
            if found:
                try:
                    manifest = json.loads(found[0].read_text())
                except json.JSONDecodeError:
                    manifest = {}
                trials = (manifest.get("capacity_search") or {}).get("trials") or []
                if len(trials) == 1 and len(manifest["stages"]) == 2:
                    break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    run = load_run(next(runs_dir.iterdir()))
    assert run.status == "incomplete"
    assert run.stages[0]["status"] == "complete"
    assert len(run.manifest["capacity_search"]["trials"]) == 1
    assert run.manifest["capacity_search"]["result"] == {"interrupted": True}
    leftover = subprocess.run(["pgrep", "-f", str(run.path)], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""  # no k6 left writing into the run


# --- comparing two searches ----------------------------------------------------------------

def search_run(root: Path, label: str, passes: list[int], fails: list[int], *,
               limited_by: str = "slo", slo_p95_ms: float = 100, searches: int = 3) -> Run:
    """A stored capacity-search run: a trial per load (fast 2xx for a pass, slow for a fail),
    stored as ``searches`` searches that all found the same bracket."""
    loads = sorted([(level, True) for level in passes] + [(level, False) for level in fails])
    stages = {f"t{i:02d}-{level}rps": (level, [20.0 if ok else 500.0] * (level * 2),
                                        [200] * (level * 2))
              for i, (level, ok) in enumerate(loads, start=1)}
    run = make_run(root, label, stages, model="rate", duration_s=2.0)
    first_fail = min(fails, default=None)
    capacity = max((p for p in passes if first_fail is None or p < first_fail), default=None)
    run.manifest["capacity_search"] = {
        "settings": settings(slo_p95_ms=slo_p95_ms).to_dict(),
        "trials": [{"rate": level, "pass": ok, "stage": key, "reason": ""}
                   for key, (level, ok) in zip(stages, loads, strict=True)],
        "result": {"capacity": capacity if limited_by != "generator" else None,
                   "first_fail": first_fail, "limited_by": limited_by, "unit": "req/s"}}
    run.manifest["capacity_search"]["searches"] = [run.manifest["capacity_search"]["result"]] \
        * searches
    run.save()
    return run


def test_compare_gives_the_capacity_ratio_interval_from_the_brackets(tmp_path: Path) -> None:
    base = search_run(tmp_path, "base", [10, 20, 40, 80, 95], [160, 113, 100])
    cand = search_run(tmp_path, "cand", [10, 20, 40, 80, 160, 190, 200], [320, 226, 213])
    capacity = compare_runs(base, cand).capacity
    assert (capacity.baseline.level, capacity.baseline.upper) == (95, 100)
    assert (capacity.candidate.level, capacity.candidate.upper) == (200, 213)
    assert capacity.ratio == pytest.approx(200 / 95)
    assert capacity.ratio_low == pytest.approx(200 / 100)  # candidate pass / baseline fail
    assert capacity.ratio_high == pytest.approx(213 / 95)  # candidate fail / baseline pass
    assert capacity.verdict == "improved"


def test_overlapping_brackets_give_no_verdict(tmp_path: Path) -> None:
    base = search_run(tmp_path, "base", [10, 20, 40, 80, 95], [160, 113, 100])
    cand = search_run(tmp_path, "cand", [10, 20, 40, 80, 97], [160, 113, 104])
    capacity = compare_runs(base, cand).capacity
    assert capacity.ratio_low is not None and capacity.ratio_low < 1
    assert capacity.ratio_high is not None and capacity.ratio_high > 1
    assert capacity.verdict == "no significant change"
    worse = compare_runs(cand, search_run(tmp_path, "worse", [10, 20, 40], [80, 57, 48])).capacity
    assert worse.ratio_high is not None and worse.ratio_high <= 1
    assert worse.verdict == "regressed"


def test_one_search_per_arm_is_not_replicated(tmp_path: Path) -> None:
    # a single search's bracket is its precision, not the run-to-run spread: an A/A pair of
    # single searches separates by chance, so it shows the range and makes no verdict
    base = search_run(tmp_path, "base", [10, 20, 40, 80, 95], [160, 113, 100], searches=1)
    cand = search_run(tmp_path, "cand", [10, 20, 40, 80, 160, 190, 200], [320, 226, 213],
                      searches=1)
    capacity = compare_runs(base, cand).capacity
    assert capacity.ratio_low == pytest.approx(2.0)
    assert capacity.verdict == "not replicated"


def test_the_envelope_of_several_searches_spans_them_all() -> None:
    from loadproof.capacity import envelope

    one = {"capacity": 95, "first_fail": 100, "limited_by": "slo", "unit": "req/s",
           "confirmed": True, "lower_bound": 95.0, "elapsed_s": 30.0}
    two = {**one, "capacity": 110, "first_fail": 121}
    three = {**one, "capacity": 88, "first_fail": 97, "confirmed": False}
    both = envelope([one, two, three])
    assert (both["capacity"], both["first_fail"]) == (88, 121)
    assert both["limited_by"] == "slo" and both["confirmed"] is False
    assert both["searches"] == 3 and both["elapsed_s"] == 90.0
    assert envelope([one]) == one
    assert envelope([one, {**two, "first_fail": None, "limited_by": "max-rate"}])[
        "first_fail"] is None
    assert envelope([one, {**two, "limited_by": "generator"}])["limited_by"] == "generator"


def test_a_generator_limited_arm_is_only_a_lower_bound(tmp_path: Path) -> None:
    base = search_run(tmp_path, "base", [10, 20, 40, 80, 95], [160, 113, 100])
    fast = search_run(tmp_path, "fast", [10, 20, 40, 80, 160], [], limited_by="generator")
    capacity = compare_runs(base, fast).capacity
    assert (capacity.candidate.level, capacity.candidate.upper) == (160, None)
    assert capacity.ratio_bound == "at_least" and capacity.ratio_high is None
    assert capacity.verdict == "improved"  # 160 passed, above the baseline's first miss
    assert "generator" in (capacity.reason or "")


def test_searches_with_different_slos_give_no_ratio(tmp_path: Path) -> None:
    base = search_run(tmp_path, "base", [10, 20], [40], slo_p95_ms=100)
    cand = search_run(tmp_path, "cand", [10, 20], [40], slo_p95_ms=200)
    capacity = compare_runs(base, cand).capacity
    assert capacity.ratio is None and "different SLOs" in (capacity.reason or "")


def test_the_closed_model_searches_users_and_reports_them_as_vus() -> None:
    run_trial, levels = threshold(45)
    result = search(settings(model="vus", min_rate=None), run_trial, sleep=lambda s: None)
    assert levels[:6] == [1, 2, 4, 8, 16, 32]
    data = result.to_dict()
    assert data["unit"] == "vus" and data["capacity"] == result.capacity
    assert result.capacity is not None and result.capacity <= 45 < (result.first_fail or 0)
    assert "vus" in data["trials"][0] and "rate" not in data["trials"][0]


def test_the_reports_capacity_section_shows_both_search_traces(tmp_path: Path) -> None:
    from loadproof.achievements import AchievementOptions, build_achievement
    from loadproof.notebook import ReportData, capacity

    base = search_run(tmp_path, "base", [10, 20, 40, 80, 95], [160, 113, 100])
    cand = search_run(tmp_path, "cand", [10, 20, 40, 80, 160, 190, 200], [320, 226, 213])
    comparison = compare_runs(base, cand)
    achievement = build_achievement(comparison, AchievementOptions(title="t"))
    assert achievement["measurements"]["capacity_increase"]["verdict"] == "improved"
    assert "searches' brackets" in achievement["measurements"]["capacity_increase"]["note"]
    page = capacity(ReportData("t", comparison, achievement)).data
    assert "Search trace, baseline: base" in page and "Search trace, candidate: cand" in page
    assert "t06-100rps" in page and "t08-213rps" in page  # each arm's trials
    assert "p95 ≤ 100 ms" in page
    assert "capacity ratio 2.00x–2.24x (improved)" in page  # the brackets' range


def test_text_result_names_the_bracket_and_warns_of_a_fired_guard() -> None:
    run_trial, _ = threshold(300)
    result = search(settings(), run_trial, sleep=lambda s: None)
    result.trials[0].guard = ["machine CPU at ≥90% of its 2 cores in 3 of 3 samples"]
    text = render_text(result)
    assert text.startswith(f"capacity: {result.capacity} req/s")
    assert f"first fail: {result.first_fail} req/s" in text and "limited by: slo" in text
    assert "warning: the generator guard fired in 1 of" in text
    assert all(t.stage in text for t in result.trials)
