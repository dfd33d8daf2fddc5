"""Each way a misleading figure could reach a headline, closed by a guard: tested on stored runs
whose repeats carry their own run-level noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from loadproof import summary
from loadproof.achievements import AchievementOptions, build_achievement
from loadproof.calibration import Samples, aa_rates
from loadproof.compare import compare_runs
from loadproof.store import Run, atomic_write_json

from .helpers import make_repeated_run

CLAIMS = {"improved", "regressed", "trade-off"}


def three(rng: np.random.Generator, low: float, high: float, n: int = 300,
          statuses: list[int] | None = None) -> list[Samples]:
    return [(list(rng.uniform(low, high, n) * np.exp(rng.normal(0, 0.03))),
             statuses or [200] * n) for _ in range(3)]


def test_simulated_aa_makes_no_claim_beyond_the_nominal_rate() -> None:
    # 3% run-level noise and within-run drift, 3 repeats per arm, 4 stages x 6 metrics each
    rates = aa_rates(30, seed=11)
    assert rates["tested"] == 30 * 4 * 6
    assert rates["per_comparison_rate"] <= 0.07
    assert rates["per_report_rate"] <= 0.07, rates["claims"]


def test_every_significant_regression_is_named(tmp_path: Path) -> None:
    # better at the top stage, twice as slow at the two below: the sample achievement's
    # "1.75x lower p95" with caveats: [] must not happen again
    rng = np.random.default_rng(1)
    base = make_repeated_run(tmp_path, "b", {"s1-10vus": (10, three(rng, 10, 20)),
                                             "s2-50vus": (50, three(rng, 10, 20)),
                                             "s3-150vus": (150, three(rng, 90, 110))})
    cand = make_repeated_run(tmp_path, "c", {"s1-10vus": (10, three(rng, 20, 40)),
                                             "s2-50vus": (50, three(rng, 20, 40)),
                                             "s3-150vus": (150, three(rng, 50, 60))})
    comparison = compare_runs(base, cand)
    record = build_achievement(comparison)
    assert record["metrics"]["latency_improvement"].endswith("x")  # claimed at 150 users
    worse = [c for c in record["caveats"] if c.startswith("significantly worse")]
    assert len(worse) == 2 and "10 users" in worse[0] and "50 users" in worse[1]
    assert "worse elsewhere" in record["title"] and "10 users" in record["title"]
    assert "significantly worse" in record["summary"] and "50 users" in record["summary"]
    assert any("Not everything improved" in p for p in summary.talking_points(comparison))
    assert any(n.startswith("significantly worse") for n in summary.caveats(comparison))


def test_throughput_gain_with_falling_success_is_a_tradeoff(tmp_path: Path) -> None:
    # failing fast: more answers per second, but 10% of them errors
    rng = np.random.default_rng(2)
    base = make_repeated_run(tmp_path, "b", {"s1-10vus": (10, three(rng, 40, 60, n=300))})
    cand = make_repeated_run(tmp_path, "c", {"s1-10vus": (10, three(
        rng, 40, 60, n=400, statuses=[200] * 360 + [503] * 40))})
    stage = compare_runs(base, cand).stage("s1-10vus")
    throughput = stage.metrics["throughput_rps"]
    assert throughput.ratio is not None and throughput.ratio > 1.3
    assert throughput.verdict == "trade-off"
    # goodput is in the claim family: 36 vs 30 successes/s, but a trade-off, not a gain
    goodput = stage.metrics["goodput_rps"]
    assert goodput.ratio is not None and goodput.ratio > 1.1 and goodput.claim == "trade-off"
    assert any("trade-off" in g for g in stage.guards)


def test_dropped_iterations_mean_load_not_delivered(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = make_repeated_run(tmp_path, "b", {"s1-100rps": (100, three(rng, 90, 110, n=1000))},
                             model="rate")
    # the candidate is faster, but its generator dropped 2% of the planned arrivals
    cand = make_repeated_run(tmp_path, "c", {"s1-100rps": (100, three(rng, 40, 60, n=1000))},
                             model="rate", dropped=20)
    comparison = compare_runs(base, cand)
    stage = comparison.stage("s1-100rps")
    p95 = stage.metrics["latency_p95_ms"]
    assert p95.verdict == "load not delivered" and p95.claim == "load not delivered"
    assert "20 dropped iterations" in stage.withheld[0]
    assert comparison.headline_stage is None
    assert "latency_improvement" not in build_achievement(comparison)["metrics"]


def test_rate_under_plan_means_load_not_delivered(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    # 100 req/s planned for 10 s, 900 requests sent: 90 req/s
    base = make_repeated_run(tmp_path, "b", {"s1-100rps": (100, three(rng, 90, 110, n=900))},
                             model="rate")
    cand = make_repeated_run(tmp_path, "c", {"s1-100rps": (100, three(rng, 40, 60, n=1000))},
                             model="rate")
    stage = compare_runs(base, cand).stage("s1-100rps")
    assert stage.metrics["latency_p95_ms"].verdict == "load not delivered"
    assert "achieved 90 req/s" in stage.withheld[0]


def test_capacity_needs_every_lower_level(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    slow, fast = (600, 800), (20, 40)
    # the candidate missed the SLO at 10 users and met it at 50: its capacity is below 10
    base = make_repeated_run(tmp_path, "b", {"s1-10vus": (10, three(rng, *fast)),
                                             "s2-50vus": (50, three(rng, *slow))})
    cand = make_repeated_run(tmp_path, "c", {"s1-10vus": (10, three(rng, *slow)),
                                             "s2-50vus": (50, three(rng, *fast))})
    cap = compare_runs(base, cand).capacity
    assert (cap.baseline.level, cap.baseline.upper) == (10, 50)
    assert (cap.candidate.level, cap.candidate.upper) == (None, 10)
    assert cap.candidate.shown() == "<10"
    assert cap.ratio == 0.0 and cap.verdict == "regressed"


def test_capacity_from_one_repeat_is_not_replicated(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    slow, fast = (600, 800), (20, 40)
    base = make_repeated_run(tmp_path, "b", {"s1-10vus": (10, three(rng, *fast)[:1]),
                                             "s2-50vus": (50, three(rng, *slow)[:1])})
    cand = make_repeated_run(tmp_path, "c", {"s1-10vus": (10, three(rng, *fast)[:1]),
                                             "s2-50vus": (50, three(rng, *fast)[:1])})
    comparison = compare_runs(base, cand)
    assert comparison.capacity.verdict == "not replicated"
    record = build_achievement(comparison, AchievementOptions(unit_cost=100.0))
    # baseline in [10, 50), candidate at least 50: the ratio is at least 1.00x
    assert record["metrics"]["capacity_increase"] == "≥1.00x (not replicated)"
    assert "cost_savings" not in record["metrics"]
    assert record["measurements"]["latency_improvement"]["verdict"] == "not replicated"
    assert not {m["verdict"] for m in record["measurements"].values()} & CLAIMS


def _set_windows(run: Run, start_minute: int, node: str = "host-a",
                 conditions: dict[str, object] | None = None) -> Run:
    run.manifest["machine_info"] = {"node": node}
    for number, record in enumerate(run.manifest["stages"]):
        minute = start_minute + number
        record["started_at"] = f"2026-01-01T10:{minute:02d}:00+00:00"
        record["ended_at"] = f"2026-01-01T10:{minute:02d}:30+00:00"
        if conditions is not None:
            record["conditions"] = conditions
    atomic_write_json(run.path / "manifest.json", run.manifest)
    return Run(run.path, json.loads((run.path / "manifest.json").read_text()))


def test_overlapping_arms_make_no_claim(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    base = make_repeated_run(tmp_path, "b", {"s1-10vus": (10, three(rng, 90, 110))})
    cand = make_repeated_run(tmp_path, "c", {"s1-10vus": (10, three(rng, 40, 60))})
    apart = compare_runs(_set_windows(base, 0), _set_windows(cand, 10))
    assert apart.stage("s1-10vus").metrics["latency_p95_ms"].claim == "improved"
    together = compare_runs(_set_windows(base, 0), _set_windows(cand, 1))
    stage = together.stage("s1-10vus")
    assert stage.metrics["latency_p95_ms"].verdict == "arms overlapped"
    assert "overlap on host host-a" in stage.withheld[0]
    # on different machines, the same clock times do not overlap
    elsewhere = compare_runs(_set_windows(base, 0), _set_windows(cand, 1, node="host-b"))
    assert not elsewhere.stage("s1-10vus").withheld


def test_disturbed_stage_makes_no_claim(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    base = make_repeated_run(tmp_path, "b", {"s1-10vus": (10, three(rng, 90, 110))})
    cand = make_repeated_run(tmp_path, "c", {"s1-10vus": (10, three(rng, 40, 60))})
    busy = {"disturbed": True, "other_cpu_cores": 0.8}
    comparison = compare_runs(_set_windows(base, 0), _set_windows(cand, 10, conditions=busy))
    stage = comparison.stage("s1-10vus")
    assert stage.metrics["latency_p95_ms"].verdict == "disturbed"
    assert "0.80 cores" in stage.withheld[0]


def test_overlap_is_caught_from_either_arm(tmp_path: Path) -> None:
    # the candidate's second stage ran during the baseline's first: both stages are suspect
    rng = np.random.default_rng(9)
    stages = {"s1-10vus": 10, "s2-50vus": 50}
    base = make_repeated_run(tmp_path, "b", {k: (v, three(rng, 90, 110)) for k, v in
                                             stages.items()})
    cand = make_repeated_run(tmp_path, "c", {k: (v, three(rng, 40, 60)) for k, v in
                                             stages.items()})
    base, cand = _set_windows(base, 0), _set_windows(cand, 20)
    for record in cand.manifest["stages"]:
        if record["key"] == "s2-50vus":
            record["started_at"] = "2026-01-01T10:00:05+00:00"
            record["ended_at"] = "2026-01-01T10:00:25+00:00"
    comparison = compare_runs(base, cand)
    assert comparison.stage("s2-50vus").withheld, "the candidate's overlapping stage"
    assert comparison.stage("s1-10vus").withheld, "the baseline's overlapped stage"


def test_capacity_near_the_slo_is_no_claim(tmp_path: Path) -> None:
    # every baseline repeat just misses a 400 ms SLO at 100 users, every candidate repeat just
    # meets it: the grid alone would call that a capacity gain; the p95s barely differ
    rng = np.random.default_rng(10)
    fast = three(rng, 20, 40)
    def near(*p95s: float) -> list[Samples]:
        return [([p95] * 300, [200] * 300) for p95 in p95s]

    base = make_repeated_run(tmp_path, "b", {"s1-50vus": (50, fast),
                                             "s2-100vus": (100, near(401, 409, 404))})
    cand = make_repeated_run(tmp_path, "c", {"s1-50vus": (50, three(rng, 20, 40)),
                                             "s2-100vus": (100, near(399, 390, 396))})
    cap = compare_runs(base, cand).capacity
    assert (cap.baseline.level, cap.baseline.upper, cap.candidate.level) == (50, 100, 100)
    assert cap.verdict == "no significant change"
    assert "neither p95 nor the success rate differs significantly" in (cap.reason or "")


def test_capacity_ignores_a_disturbed_stage(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    base = make_repeated_run(tmp_path, "b", {"s1-10vus": (10, three(rng, 20, 40)),
                                             "s2-100vus": (100, three(rng, 600, 800))})
    cand = make_repeated_run(tmp_path, "c", {"s1-10vus": (10, three(rng, 20, 40)),
                                             "s2-100vus": (100, three(rng, 20, 40))})
    base = _set_windows(base, 0, conditions={"disturbed": True, "other_cpu_cores": 0.9})
    cap = compare_runs(base, _set_windows(cand, 10)).capacity
    # the baseline's misses were measured while others took the CPU: they decide nothing
    assert cap.baseline.upper is None and cap.verdict != "improved"
    assert "not measured fairly" in cap.baseline.checks["s2-100vus"]
