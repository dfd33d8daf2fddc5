"""Comparison math on small hand-made runs, with hand-computed expectations."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loadproof import stats
from loadproof.achievements import fmt_ratio
from loadproof.compare import Slo, compare_runs
from loadproof.metrics import stage_metrics

from .helpers import make_run


def ok(durations: list[float]) -> tuple[list[float], list[int]]:
    return durations, [200] * len(durations)


def test_metrics_hand_computed(tmp_path: Path) -> None:
    durations = [float(i) for i in range(1, 101)]  # 1..100 ms
    statuses = [200] * 90 + [429] * 5 + [500] * 4 + [0]
    run = make_run(tmp_path, "a", {"s1-10vus": (10, durations, statuses)}, duration_s=10)
    (m,) = stage_metrics(run)
    assert (m.requests, m.successes, m.rate_limited, m.errors) == (100, 90, 5, 5)
    assert m.throughput_rps == 10.0 and m.goodput_rps == 9.0
    assert m.success_rate == 0.9 and m.rate_limited_share == 0.05 and m.error_share == 0.05
    # nearest rank over the 90 successful requests (1..90 ms): p95 = ceil(85.5) = 86th
    assert m.latency_ok.p95_ms == 86.0 and m.latency_ok.p50_ms == 45.0
    assert m.latency_ok.max_ms == 90.0
    assert m.latency_all.p99_ms == 99.0


def test_repeats_pool_samples_not_percentiles(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", {"s1-10vus": (10, [1.0, 2.0, 3.0, 4.0], [200] * 4)},
                   repeats=2)
    (m,) = stage_metrics(run)
    assert m.requests == 8 and m.duration_s == 20.0 and len(m.per_repeat) == 2
    assert m.latency_ok.p50_ms == 2.0


def test_clear_improvement(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = make_run(tmp_path, "base", {"s1-10vus": (10, *ok(list(rng.uniform(90, 110, 400))))})
    cand = make_run(tmp_path, "cand", {"s1-10vus": (10, *ok(list(rng.uniform(40, 60, 400))))})
    c = compare_runs(base, cand)
    p95 = c.stage("s1-10vus").metrics["latency_p95_ms"]
    assert p95.verdict == "improved"
    assert p95.ratio == pytest.approx(p95.baseline / p95.candidate)  # type: ignore[operator]
    assert 1.8 < p95.ratio < 2.2  # type: ignore[operator]
    assert p95.ci95 is not None and p95.ci95[0] > 1
    assert c.headline_stage == "s1-10vus"


def test_interval_spanning_one_is_no_significant_change(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base = make_run(tmp_path, "b", {"s1-10vus": (10, *ok(list(rng.uniform(10, 100, 200))))})
    cand = make_run(tmp_path, "c", {"s1-10vus": (10, *ok(list(rng.uniform(10, 100, 200))))})
    p95 = compare_runs(base, cand).stage("s1-10vus").metrics["latency_p95_ms"]
    assert p95.verdict == "no significant change"
    assert "spans 1" in p95.reasons[0]


def test_only_failures_gives_no_latency_figure(tmp_path: Path) -> None:
    # k6 reports p95 = 0 when nothing succeeded; that must never become "infinitely faster"
    base = make_run(tmp_path, "b", {"s1-150vus": (150, *ok([100.0] * 100))})
    cand = make_run(tmp_path, "c", {"s1-150vus": (150, [0.0] * 100, [0] * 100)})
    stage = compare_runs(base, cand).stage("s1-150vus")
    p95 = stage.metrics["latency_p95_ms"]
    assert p95.ratio is None and p95.candidate is None and p95.verdict == "not comparable"
    assert "only failures" in p95.reasons[0]
    assert any("only failures" in g for g in stage.guards)


def test_too_few_successes_gives_no_latency_figure(tmp_path: Path) -> None:
    base = make_run(tmp_path, "b", {"s1-10vus": (10, *ok([50.0] * 100))})
    cand = make_run(tmp_path, "c", {"s1-10vus": (10, [5.0] * 100, [200] * 10 + [503] * 90)})
    p95 = compare_runs(base, cand, slo=Slo(min_successes=30)).stage("s1-10vus") \
        .metrics["latency_p95_ms"]
    assert p95.ratio is None and "only 10 successful" in p95.reasons[0]


def test_latency_gain_with_falling_success_is_a_tradeoff(tmp_path: Path) -> None:
    # the seed's "33x faster" while success fell to 58%
    base = make_run(tmp_path, "b", {"s1-150vus": (150, *ok([400.0] * 500))})
    cand = make_run(tmp_path, "c", {"s1-150vus": (150, [12.0] * 500,
                                                  [200] * 290 + [429] * 210)})
    stage = compare_runs(base, cand).stage("s1-150vus")
    p95 = stage.metrics["latency_p95_ms"]
    assert p95.ratio == pytest.approx(400 / 12)
    assert p95.verdict == "trade-off"
    assert "trade-off" in p95.reasons[-1]
    assert stage.metrics["success_rate"].verdict == "regressed"


def test_different_plans_are_not_compared_stage_by_stage(tmp_path: Path) -> None:
    base = make_run(tmp_path, "b", {"s1-10vus": (10, *ok([5.0] * 50))})
    cand = make_run(tmp_path, "c", {"s1-20vus": (20, *ok([5.0] * 50))})
    c = compare_runs(base, cand)
    assert c.stages == [] and c.headline_stage is None
    assert any("stage plans differ" in g for g in c.guards)


def test_zero_baseline_gives_no_ratio(tmp_path: Path) -> None:
    base = make_run(tmp_path, "b", {"s1-10vus": (10, [5.0] * 50, [500] * 50)})
    cand = make_run(tmp_path, "c", {"s1-10vus": (10, *ok([5.0] * 50))})
    success = compare_runs(base, cand).stage("s1-10vus").metrics["success_rate"]
    assert success.baseline == 0.0 and success.ratio is None
    assert "baseline value is zero" in success.reasons[0]


def test_empty_and_nan_never_become_numbers() -> None:
    assert stats.percentile(np.empty(0), 0.95) is None
    assert stats.improvement_ratio(None, 3.0, True) == (None, "a value is missing")
    ratio, why = stats.improvement_ratio(float("nan"), 3.0, True)
    assert ratio is None and "finite" in (why or "")
    assert stats.ratio_interval(np.full(10, np.nan), np.ones(10), True, 1.0) is None


def test_capacity_and_ratio(tmp_path: Path) -> None:
    fast, slow = ok([50.0] * 100), ok([900.0] * 100)
    base = make_run(tmp_path, "b", {"s1-10vus": (10, *fast), "s2-50vus": (50, *slow),
                                    "s3-100vus": (100, *slow)})
    cand = make_run(tmp_path, "c", {"s1-10vus": (10, *fast), "s2-50vus": (50, *fast),
                                    "s3-100vus": (100, *slow)})
    cap = compare_runs(base, cand).capacity
    assert (cap.baseline.level, cap.candidate.level) == (10, 50)
    assert cap.ratio == 5.0 and cap.ratio_bound == "exact"
    cand_top = make_run(tmp_path, "t", {"s1-10vus": (10, *fast), "s2-50vus": (50, *fast),
                                        "s3-100vus": (100, *fast)})
    cap = compare_runs(base, cand_top).capacity
    assert cap.ratio == 10.0 and cap.ratio_bound == "at_least"
    # the baseline held every stage, the candidate only the first: a regression, and its size
    # is known only as a ceiling
    cap = compare_runs(cand_top, base).capacity
    assert cap.ratio == 0.1 and cap.ratio_bound == "at_most" and cap.reason is None
    assert fmt_ratio(cap.ratio, cap.ratio_bound) == "≤0.10x"
    cap = compare_runs(cand_top, cand_top).capacity
    assert cap.ratio is None and "beyond the plan" in (cap.reason or "")


def test_knee_in_open_model(tmp_path: Path) -> None:
    base = make_run(tmp_path, "b", {"s1-100rps": (100, *ok([5.0] * 100)),
                                    "s2-200rps": (200, *ok([6.0] * 100)),
                                    "s3-400rps": (400, *ok([30.0] * 100))}, model="rate")
    cap = compare_runs(base, base).capacity
    assert cap.baseline.knee_level == 400 and "over twice" in (cap.baseline.knee_reason or "")


def test_incomplete_run_compared_with_warning(tmp_path: Path) -> None:
    base = make_run(tmp_path, "b", {"s1-10vus": (10, *ok([5.0] * 50))}, status="incomplete")
    cand = make_run(tmp_path, "c", {"s1-10vus": (10, *ok([5.0] * 50))})
    c = compare_runs(base, cand)
    assert any("incomplete" in w for w in c.warnings) and len(c.stages) == 1


samples = st.lists(st.floats(min_value=0.1, max_value=5000, allow_nan=False), min_size=30,
                   max_size=300)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(a=samples, b=samples)
def test_properties_direction_interval_symmetry(tmp_path_factory: pytest.TempPathFactory,
                                                a: list[float], b: list[float]) -> None:
    root = tmp_path_factory.mktemp("prop")
    run_a = make_run(root, "a", {"s1-10vus": (10, *ok(a))})
    run_b = make_run(root, "b", {"s1-10vus": (10, *ok(b))})
    ab = compare_runs(run_a, run_b).stage("s1-10vus").metrics["latency_p95_ms"]
    ba = compare_runs(run_b, run_a).stage("s1-10vus").metrics["latency_p95_ms"]
    assert ab.ratio is not None and ba.ratio is not None
    # direction: lower candidate latency means a ratio above 1
    if ab.candidate < ab.baseline:  # type: ignore[operator]
        assert ab.ratio > 1
    # the interval contains the point estimate
    assert ab.ci95 is not None and ab.ci95[0] <= ab.ratio <= ab.ci95[1]
    # symmetry: comparing b to a inverts comparing a to b
    assert ab.ratio * ba.ratio == pytest.approx(1.0)
    assert {"improved": "regressed", "regressed": "improved"}.get(ab.verdict, ab.verdict) \
        == ba.verdict or ab.verdict == ba.verdict == "no significant change" or \
        abs(ab.ci95[0] - 1) < 0.05 or abs(ab.ci95[1] - 1) < 0.05


def test_order_statistic_bootstrap_matches_resampling() -> None:
    rng = np.random.default_rng(7)
    values = np.sort(rng.lognormal(3, 0.5, 500))
    fast = stats.draw_quantile(values, 0.95, rng, draws=4000)
    slow = np.array([np.sort(rng.choice(values, 500))[474] for _ in range(4000)])
    assert np.percentile(fast, [2.5, 50, 97.5]) == pytest.approx(
        np.percentile(slow, [2.5, 50, 97.5]), rel=0.03)
