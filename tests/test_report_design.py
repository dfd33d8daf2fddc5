"""The report's design issue: the distribution guard, honest metadata, per-endpoint figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from loadproof.achievements import build_achievement, technologies
from loadproof.compare import RESHAPED, compare_runs
from loadproof.store import load_run
from loadproof.summary import run_window, talking_points

from .conftest import SAMPLE
from .helpers import make_repeated_run

N = 600


def _bimodal(rng: np.random.Generator) -> list[float]:
    """Most answers fast, a fifth slow: mean about 60 ms, median about 40, p95 about 140."""
    fast = rng.normal(40.0, 2.0, int(N * 0.8))
    slow = rng.normal(140.0, 4.0, N - len(fast))
    return list(rng.permutation(np.concatenate([fast, slow])))


def _even(rng: np.random.Generator) -> list[float]:
    """The same mean, no tail: every answer about 60 ms."""
    return list(rng.normal(60.0, 2.0, N))


def _run(root: Path, label: str, draw: object, seed: int) -> object:
    rng = np.random.default_rng(seed)
    repeats = [(draw(rng), [200] * N) for _ in range(3)]  # type: ignore[operator]
    return make_repeated_run(root, label, {"s1-50vus": (50, repeats)})


def test_a_reshaped_tail_is_not_called_faster(tmp_path: Path) -> None:
    base = _run(tmp_path, "before", _bimodal, 1)
    cand = _run(tmp_path, "after", _even, 2)
    comparison = compare_runs(base, cand)  # type: ignore[arg-type]
    stage = comparison.stages[0]
    p95, p50 = stage.metrics["latency_p95_ms"], stage.metrics["latency_p50_ms"]
    assert p95.verdict == "improved" and p50.verdict == "regressed"  # the premise
    dist = stage.distribution
    assert dist is not None and dist.mean_ci95 is not None
    assert dist.mean_ci95[0] <= 1 <= dist.mean_ci95[1]
    assert dist.interval == "between repeats"
    # the mean is the plain mean of the successful answers, not a percentile
    assert stage.baseline.blocks is not None
    frame = stage.baseline.blocks.ok_ms
    assert abs(dist.mean_baseline_ms - float(frame.mean())) < 1e-9  # type: ignore[operator]
    assert dist.verdict == RESHAPED
    assert any(g.startswith(RESHAPED) for g in stage.guards)
    record = build_achievement(comparison)
    assert RESHAPED in record["summary"]
    assert RESHAPED in record["metrics"]["latency_improvement"]
    assert "lower p95" not in record["title"]
    points = " ".join(talking_points(comparison))
    assert RESHAPED in points and "x faster" not in points


def test_the_guard_stays_quiet_in_an_aa_comparison(tmp_path: Path) -> None:
    for index, draw in enumerate((_bimodal, _even)):
        first = _run(tmp_path / str(index), "a1", draw, 10 + index)
        second = _run(tmp_path / str(index), "a2", draw, 20 + index)
        comparison = compare_runs(first, second)  # type: ignore[arg-type]
        stage = comparison.stages[0]
        assert stage.distribution is not None and stage.distribution.verdict is None
        assert RESHAPED not in build_achievement(comparison)["summary"]


def test_a_real_speedup_is_not_flagged(tmp_path: Path) -> None:
    """Everything faster (mean, median and tail): no guard."""
    base = _run(tmp_path, "slow", _bimodal, 3)
    rng = np.random.default_rng(4)
    repeats = [([v / 2 for v in _bimodal(rng)], [200] * N) for _ in range(3)]
    cand = make_repeated_run(tmp_path, "fast", {"s1-50vus": (50, repeats)})
    comparison = compare_runs(base, cand)  # type: ignore[arg-type]
    stage = comparison.stages[0]
    assert stage.metrics["latency_p95_ms"].verdict == "improved"
    assert stage.distribution is not None and stage.distribution.verdict is None
    assert stage.distribution.mean_ci95 is not None and stage.distribution.mean_ci95[0] > 1


def test_sample_runs_show_the_reshaped_tail() -> None:
    """The shipped samples: p95 186 -> 106 ms at 150 users with the mean at 60 ms both times
    and the median up from 44 to 60 ms (one repeat each: within-run intervals)."""
    comparison = compare_runs(load_run(SAMPLE / "baseline"), load_run(SAMPLE / "optimized"))
    head = comparison.headline
    assert head is not None and head.key == "s4-150vus"
    assert head.distribution is not None and head.distribution.verdict == RESHAPED
    assert head.distribution.interval == "within this run only"
    assert RESHAPED in build_achievement(comparison)["summary"]
    itself = compare_runs(load_run(SAMPLE / "baseline"), load_run(SAMPLE / "baseline"))
    assert all(s.distribution is not None and s.distribution.verdict is None
               for s in itself.stages)


def test_run_window_ends_with_the_runs_own_last_stage() -> None:
    base, cand = load_run(SAMPLE / "baseline"), load_run(SAMPLE / "optimized")
    base_start, base_end = run_window(base)
    cand_start, _ = run_window(cand)
    last = max(s["ended_at"] for s in base.manifest["stages"])
    assert base_end == last and base_end < base.manifest["ended_at"]
    assert base_end < cand_start  # the arms ran one after the other, as the stages say


def test_technologies_are_the_measured_stack_not_loadproofs() -> None:
    comparison = compare_runs(load_run(SAMPLE / "baseline"), load_run(SAMPLE / "optimized"))
    found = technologies(comparison)
    assert "k6 v1.1.0" in found and "FastAPI" in found and "PostgreSQL" in found
    for own in ("polars", "Jupyter", "papermill", "Prometheus"):
        assert own not in found


def test_per_endpoint_figures_equal_a_recomputation() -> None:
    """Counts, success shares and nearest-rank percentiles per stage and request name, from
    the requests files directly; the counts add up to the stage's."""
    import polars as pl
    from loadproof.endpoints import endpoint_rows

    base, cand = load_run(SAMPLE / "baseline"), load_run(SAMPLE / "optimized")
    comparison = compare_runs(base, cand)
    rows = endpoint_rows(comparison)
    assert {r.name for r in rows} == {"POST /task", "GET /task/{id}"}
    assert len(rows) == 2 * len(comparison.stages)
    for run, side in ((base, "baseline"), (cand, "candidate")):
        frame = pl.concat([pl.read_parquet(f) for f in run.requests_files()])
        for row in rows:
            arm = getattr(row, side)
            part = frame.filter((pl.col("stage") == row.stage) & (pl.col("name") == row.name))
            ok = np.sort(part.filter(pl.col("expected"))["duration_ms"].to_numpy())
            assert arm.requests == part.height and arm.successes == len(ok)
            for attr, q in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
                assert getattr(arm, attr) == ok[int(np.ceil(len(ok) * q)) - 1]
        for stage in comparison.stages:
            metrics = stage.baseline if side == "baseline" else stage.candidate
            assert sum(getattr(r, side).requests for r in rows if r.stage == stage.key) \
                == metrics.requests
    head = next(r for r in rows if r.stage == "s4-150vus" and r.name == "POST /task")
    assert head.verdict == "not replicated"  # one repeat per arm: figures, not verdicts
    assert head.p95_ratio == head.baseline.p95_ms / head.candidate.p95_ms  # type: ignore[union-attr]


def test_the_results_table_prints_the_comparisons_figures() -> None:
    import re

    from loadproof.reportview import change_interval, results_table

    comparison = compare_runs(load_run(SAMPLE / "baseline"), load_run(SAMPLE / "optimized"))
    page = results_table(comparison)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", page)
    head = comparison.stage("s4-150vus")
    p95 = head.metrics["latency_p95_ms"]
    assert "186 ms" in cells and "106 ms" in cells
    expected = f"{1 / p95.ratio - 1:+.1%}".replace("-", "−")  # type: ignore[operator]
    assert expected in cells
    assert change_interval(p95.ci95, True) in cells
    # after/before − 1 from the ratio's ends: the interval of a lower p95 lies below zero
    low, high = (1 / p95.ci95[1] - 1, 1 / p95.ci95[0] - 1)  # type: ignore[index]
    assert change_interval(p95.ci95, True) == \
        f"{low:+.1%} to {high:+.1%}".replace("-", "−")
    # every request succeeded: throughput and goodput are one row, not two
    assert page.count("answers per second (all succeeded)") == len(comparison.stages)
    assert "successes per second" not in page
    assert page.count(RESHAPED) == sum(1 for s in comparison.stages if s.distribution
                                       and s.distribution.verdict == RESHAPED)


def test_a_change_significant_alone_but_not_after_correction_says_both() -> None:
    from types import SimpleNamespace

    from loadproof.compare import MetricComparison
    from loadproof.reportview import shown_verdict

    stage = SimpleNamespace(distribution=None)
    metric = MetricComparison("latency_p95_ms", "p95", "ms", True, 617.0, 254.0, 2.43,
                              (1.37, 4.33), "improved", p_value=0.014,
                              claim="no significant change", p_holm=0.13)
    words, css = shown_verdict(stage, metric)  # type: ignore[arg-type]
    assert words.startswith("improved alone; not a claim") and "adjusted p = 0.13" in words
    assert css == "v-other"
    metric.claim, metric.p_holm = "improved", 0.01
    assert shown_verdict(stage, metric) == ("improved", "v-improved")  # type: ignore[arg-type]
    metric.verdict, metric.claim = "no significant change", "no significant change"
    assert shown_verdict(stage, metric)[0] == "no significant change"  # type: ignore[arg-type]


def test_the_first_sentence_says_cut_only_for_a_claim(tmp_path: Path) -> None:
    from loadproof.reportview import headline_sentence

    base = _run(tmp_path, "slow", _bimodal, 3)
    rng = np.random.default_rng(4)
    repeats = [([v / 2 for v in _bimodal(rng)], [200] * N) for _ in range(3)]
    cand = make_repeated_run(tmp_path, "fast", {"s1-50vus": (50, repeats)})
    comparison = compare_runs(base, cand)  # type: ignore[arg-type]
    p95 = comparison.stages[0].metrics["latency_p95_ms"]
    assert p95.claim == "improved"
    assert "fast cut p95 latency" in headline_sentence(comparison)
    # the same figures without the corrected claim: measured lower, never "cut"
    p95.claim, p95.p_holm = "no significant change", 0.13
    sentence = headline_sentence(comparison)
    assert " cut " not in sentence and "lower as measured" in sentence
    assert "not a claim after correcting" in sentence and "adjusted p = 0.13" in sentence
