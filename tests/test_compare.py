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

from .helpers import Samples, make_repeated_run, make_run


def ok(durations: list[float]) -> tuple[list[float], list[int]]:
    return durations, [200] * len(durations)


def repeats(rng: np.random.Generator, low: float, high: float, n: int = 300, count: int = 3,
            run_noise: float = 0.03, statuses: list[int] | None = None) -> list[Samples]:
    """``count`` repeats of uniform latencies, each shifted by its own run-level factor."""
    out = []
    for _ in range(count):
        shift = float(np.exp(rng.normal(0, run_noise)))
        out.append((list(rng.uniform(low, high, n) * shift), statuses or [200] * n))
    return out


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
    base = make_repeated_run(tmp_path, "base", {"s1-10vus": (10, repeats(rng, 90, 110))})
    cand = make_repeated_run(tmp_path, "cand", {"s1-10vus": (10, repeats(rng, 40, 60))})
    c = compare_runs(base, cand)
    p95 = c.stage("s1-10vus").metrics["latency_p95_ms"]
    assert p95.verdict == "improved" and p95.claim == "improved"
    assert p95.interval == "between repeats" and p95.repeats == (3, 3)
    assert p95.ratio == pytest.approx(p95.baseline / p95.candidate)  # type: ignore[operator]
    assert 1.7 < p95.ratio < 2.3  # type: ignore[operator]
    assert p95.ci95 is not None and 1 < p95.ci95[0] < p95.ratio < p95.ci95[1]
    assert c.headline_stage == "s1-10vus"


def test_welch_matches_a_hand_computation() -> None:
    base, cand = [100.0, 104.0, 98.0], [50.0, 53.0, 49.0]
    est = stats.welch_log_ratio(base, cand, lower_is_better=True)
    lb, lc = np.log(base), np.log(cand)
    diff = lb.mean() - lc.mean()
    vb, vc = lb.var(ddof=1) / 3, lc.var(ddof=1) / 3
    df = (vb + vc) ** 2 / (vb ** 2 / 2 + vc ** 2 / 2)
    from scipy import stats as sp

    half = sp.t.ppf(0.975, df) * np.sqrt(vb + vc)
    assert est.ratio == pytest.approx(np.exp(diff))
    assert est.ci95 == pytest.approx((np.exp(diff - half), np.exp(diff + half)))
    assert est.p_value == pytest.approx(sp.ttest_ind(lb, lc, equal_var=False).pvalue)
    # higher is better flips the direction, and the interval with it
    flipped = stats.welch_log_ratio(base, cand, lower_is_better=False)
    assert flipped.ratio == pytest.approx(1 / est.ratio)
    assert flipped.ci95 == pytest.approx((1 / est.ci95[1], 1 / est.ci95[0]))  # type: ignore[index]


def test_interval_spanning_one_is_no_significant_change(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base = make_repeated_run(tmp_path, "b", {"s1-10vus": (10, repeats(rng, 10, 100))})
    cand = make_repeated_run(tmp_path, "c", {"s1-10vus": (10, repeats(rng, 10, 100))})
    p95 = compare_runs(base, cand).stage("s1-10vus").metrics["latency_p95_ms"]
    assert p95.verdict == "no significant change"
    assert "spans 1" in p95.reasons[0]


def test_one_repeat_is_a_measurement_not_a_verdict(tmp_path: Path) -> None:
    # a 2x gain measured once: the figure is shown, with a within-run interval, but no verdict
    rng = np.random.default_rng(3)
    base = make_run(tmp_path, "b", {"s1-10vus": (10, *ok(list(rng.uniform(90, 110, 2000))))})
    cand = make_run(tmp_path, "c", {"s1-10vus": (10, *ok(list(rng.uniform(40, 60, 2000))))})
    c = compare_runs(base, cand)
    p95 = c.stage("s1-10vus").metrics["latency_p95_ms"]
    assert p95.verdict == "not replicated" and p95.claim == "not replicated"
    assert p95.interval == "within this run only" and p95.p_value is None
    assert p95.ci95 is not None and p95.ci95[0] < p95.ratio < p95.ci95[1]  # type: ignore[operator]
    # the p95s are about 109.5 and 59.5 ms
    assert p95.ci95[0] > 1.75 and p95.ci95[1] < 1.95
    assert any("not a verdict" in r for r in p95.reasons)


def test_full_success_is_never_certainty(tmp_path: Path) -> None:
    # 100% in every repeat of both arms: the interval must not be zero-width
    rng = np.random.default_rng(4)
    base = make_repeated_run(tmp_path, "b", {"s1-10vus": (10, repeats(rng, 10, 20, n=200))})
    cand = make_repeated_run(tmp_path, "c", {"s1-10vus": (10, repeats(rng, 10, 20, n=200))})
    success = compare_runs(base, cand).stage("s1-10vus").metrics["success_rate"]
    assert success.ratio == pytest.approx(1.0) and success.ci95 is not None
    assert success.ci95[0] < 0.99 and success.ci95[1] > 1.01
    assert success.verdict == "no significant change"
    low, high = stats.wilson(200, 200)  # type: ignore[misc]
    assert high == pytest.approx(1.0) and 0.97 < low < 0.99


def test_only_failures_gives_no_latency_figure(tmp_path: Path) -> None:
    # k6 reports p95 = 0 when nothing succeeded; that must never become "infinitely faster"
    base = make_run(tmp_path, "b", {"s1-150vus": (150, *ok([100.0] * 100))})
    cand = make_run(tmp_path, "c", {"s1-150vus": (150, [0.0] * 100, [0] * 100)})
    stage = compare_runs(base, cand).stage("s1-150vus")
    p95 = stage.metrics["latency_p95_ms"]
    assert p95.ratio is None and p95.candidate is None and p95.verdict == "not comparable"
    assert p95.reasons[0] == ("candidate has no successful requests at s1-150vus (minimum 30): "
                              "no latency figure")
    assert any("no successful requests" in g for g in stage.guards)


def test_too_few_successes_gives_no_latency_figure(tmp_path: Path) -> None:
    base = make_run(tmp_path, "b", {"s1-10vus": (10, *ok([50.0] * 100))})
    cand = make_run(tmp_path, "c", {"s1-10vus": (10, [5.0] * 100, [200] * 10 + [503] * 90)})
    p95 = compare_runs(base, cand, slo=Slo(min_successes=30)).stage("s1-10vus") \
        .metrics["latency_p95_ms"]
    assert p95.ratio is None and "only 10 successful" in p95.reasons[0]


def test_latency_gain_with_falling_success_is_a_tradeoff(tmp_path: Path) -> None:
    # the seed's "33x faster" while success fell to 58%
    rng = np.random.default_rng(5)
    base = make_repeated_run(tmp_path, "b", {"s1-150vus": (150, repeats(rng, 399, 401, n=500))})
    cand = make_repeated_run(tmp_path, "c", {"s1-150vus": (150, [
        ([12.0] * 500, [200] * (290 + i) + [429] * (210 - i)) for i in range(3)])})
    stage = compare_runs(base, cand).stage("s1-150vus")
    p95 = stage.metrics["latency_p95_ms"]
    assert p95.ratio == pytest.approx(400 / 12, rel=0.05)
    assert p95.verdict == "trade-off" and p95.claim == "trade-off"
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
    assert stats.geometric_mean([1.0, float("nan")]) is None
    assert stats.geometric_mean([0.0, 2.0]) is None and stats.geometric_mean([0.0, 0.0]) == 0.0


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
    # symmetry: comparing b to a inverts comparing a to b
    assert ab.ratio * ba.ratio == pytest.approx(1.0)
    # one run per arm never yields a verdict, whatever the samples
    assert ab.verdict == ba.verdict == "not replicated"


def test_block_bootstrap_widens_with_drift_within_the_run(tmp_path: Path) -> None:
    # the same latencies, once shuffled and once drifting over the stage: 1 s blocks carry the
    # drift into the within-run interval, which resampling single requests would not
    rng = np.random.default_rng(8)
    values = list(rng.uniform(40, 60, 1000))
    drifting = sorted(values)
    base = make_run(tmp_path, "b", {"s1-10vus": (10, *ok(values))})
    flat = make_run(tmp_path, "c", {"s1-10vus": (10, *ok(list(rng.permutation(values))))})
    drift = make_run(tmp_path, "d", {"s1-10vus": (10, *ok(drifting))})
    width = []
    for cand in (flat, drift):
        ci = compare_runs(base, cand).stage("s1-10vus").metrics["latency_p50_ms"].ci95
        assert ci is not None
        width.append(ci[1] - ci[0])
    assert width[1] > 3 * width[0]
