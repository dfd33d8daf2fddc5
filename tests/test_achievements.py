import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from loadproof import summary
from loadproof.achievements import (
    SCHEMA_PATH,
    AchievementOptions,
    build_achievement,
    update_feed,
    validate,
    write_achievement,
)
from loadproof.compare import compare_runs
from loadproof.errors import AchievementError

from .helpers import Samples, make_repeated_run


def three(rng: np.random.Generator, low: float, high: float, n: int = 200) -> list[Samples]:
    """Three repeats, each with its own run-level shift of a few percent."""
    return [(list(rng.uniform(low, high, n) * np.exp(rng.normal(0, 0.03))), [200] * n)
            for _ in range(3)]


def _pair(tmp_path: Path):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    base = make_repeated_run(tmp_path, "baseline", {"s1-10vus": (10, three(rng, 20, 40)),
                                                    "s2-50vus": (50, three(rng, 300, 500)),
                                                    "s3-100vus": (100, three(rng, 300, 500))})
    cand = make_repeated_run(tmp_path, "optimized", {"s1-10vus": (10, three(rng, 20, 40)),
                                                     "s2-50vus": (50, three(rng, 20, 40)),
                                                     "s3-100vus": (100, three(rng, 300, 500))})
    return compare_runs(base, cand)


def test_achievement_is_measured_and_traceable(tmp_path: Path) -> None:
    record = build_achievement(_pair(tmp_path), AchievementOptions(interview_value="high"))
    jsonschema.validate(record, json.loads(SCHEMA_PATH.read_text()))
    # baseline in [10, 50), candidate in [50, 100) users: the ratio lies between 1x and 10x
    assert record["metrics"]["capacity_increase"] == "1.00x–10.00x"
    latency = record["measurements"]["latency_improvement"]
    assert latency["runs"] == ["run-baseline", "run-optimized"]
    assert latency["stage"] == "s3-100vus" and latency["files"]
    assert record["interview_value"] == "high"
    assert any(t.startswith("k6 v1.1.0") for t in record["technologies"])
    # no unit cost, no savings: absent, with the reason
    assert "cost_savings" not in record["metrics"]
    assert "unit cost" in record["omitted"]["cost_savings"]


def test_cost_savings_derived_from_capacity(tmp_path: Path) -> None:
    # capacity: baseline in [10, 50), candidate in [50, 100) users: the ratio is 5.0x on the
    # grid's lower bounds, but only at least 50/50 = 1.0x for sure: no saving can be claimed
    record = build_achievement(_pair(tmp_path), AchievementOptions(unit_cost=100.0))
    assert "cost_savings" not in record["metrics"]
    assert "lower bound is above 1" in record["omitted"]["cost_savings"]


def test_cost_savings_come_from_the_capacity_lower_bound(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    fast, slow = (20, 40), (600, 800)
    levels = {"s1-10vus": 10, "s2-20vus": 20, "s3-40vus": 40}
    base = make_repeated_run(tmp_path, "b", {k: (v, three(rng, *(fast if v == 10 else slow)))
                                             for k, v in levels.items()})
    cand = make_repeated_run(tmp_path, "c", {k: (v, three(rng, *fast))
                                             for k, v in levels.items()})
    comparison = compare_runs(base, cand)
    cap = comparison.capacity
    # baseline in [10, 20), candidate at least 40: the ratio is at least 40/20 = 2
    assert (cap.ratio, cap.ratio_low, cap.ratio_high, cap.verdict) == (4.0, 2.0, None, "improved")
    record = build_achievement(comparison, AchievementOptions(unit_cost=100.0))
    assert record["metrics"]["cost_savings"] == "at least $50.00 per instance-month at equal load"
    assert record["measurements"]["cost_savings"]["ratio"] == 2.0


def test_capacity_loss_is_reported_not_hidden(tmp_path: Path) -> None:
    # the baseline held the SLO at every stage, the candidate only at the first: the guard
    # that refuses a ratio for "beyond the plan" must not hide this loss
    rng = np.random.default_rng(4)
    base = make_repeated_run(tmp_path, "baseline", {"s1-10vus": (10, three(rng, 20, 40)),
                                                    "s2-50vus": (50, three(rng, 20, 40))})
    cand = make_repeated_run(tmp_path, "optimized", {"s1-10vus": (10, three(rng, 20, 40)),
                                                     "s2-50vus": (50, three(rng, 300, 500))})
    comparison = compare_runs(base, cand)
    record = build_achievement(comparison, AchievementOptions(unit_cost=100.0))
    jsonschema.validate(record, json.loads(SCHEMA_PATH.read_text()))
    # baseline at least 50, candidate in [10, 50): under 1x, by how much the plan cannot say
    assert record["metrics"]["capacity_increase"] == "<1.00x (regressed)"
    assert record["title"].startswith("<1.00x of the baseline's capacity: optimized vs baseline")
    measured = record["measurements"]["capacity_increase"]
    assert measured["verdict"] == "regressed" and measured["bound"] == "at_most"
    assert "cost_savings" not in record["metrics"]
    assert "more instances" in record["omitted"]["cost_savings"]
    assert any("fell" in point for point in summary.talking_points(comparison))


def test_invalid_record_is_refused_before_writing(tmp_path: Path) -> None:
    record = build_achievement(_pair(tmp_path))
    record["metrics"]["cost_savings"] = 50000  # a number where a display string belongs
    out = tmp_path / "a.json"
    with pytest.raises(AchievementError, match="metrics/cost_savings"):
        write_achievement(record, out)
    assert not out.exists()
    with pytest.raises(AchievementError):
        validate({"title": "x"})


def test_feed_has_stable_ids_newest_first(tmp_path: Path) -> None:
    feed_path = tmp_path / "feed.json"
    first = build_achievement(_pair(tmp_path / "one"))
    update_feed(first, feed_path)
    update_feed(first, feed_path)  # re-running updates its item, no duplicate
    feed = json.loads(feed_path.read_text())
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert len(feed["items"]) == 1
    other = dict(first, comparison_id="cmp-0000000000000001", title="other")
    update_feed(other, feed_path)
    feed = json.loads(feed_path.read_text())
    assert [i["id"] for i in feed["items"]] == ["loadproof:cmp-0000000000000001",
                                                f"loadproof:{first['comparison_id']}"]
    assert feed["items"][1]["_loadproof"]["title"] == first["title"]


def test_feed_that_is_not_a_feed_is_not_overwritten(tmp_path: Path) -> None:
    feed_path = tmp_path / "feed.json"
    feed_path.write_text('{"something": "else"}')
    with pytest.raises(AchievementError, match="not a JSON Feed"):
        update_feed(build_achievement(_pair(tmp_path)), feed_path)
    assert feed_path.read_text() == '{"something": "else"}'


def test_ratio_display() -> None:
    from loadproof.achievements import fmt_ratio

    assert [fmt_ratio(r) for r in (33.3, 3.24, 1.5, 1.0, 0.996, 0.5)] == \
        ["33x", "3.2x", "1.50x", "1.00x", "0.996x", "0.50x"]
    assert fmt_ratio(3.0, "at_least") == "≥3.0x" and fmt_ratio(None) == "n/a"


def test_crossed_k6_threshold_reaches_the_achievement(tmp_path: Path) -> None:
    comparison = _pair(tmp_path)
    record = comparison.candidate.manifest["stages"][0]
    record["threshold_results"] = [{"metric": "http_req_duration", "threshold": "p(95)<10",
                                    "ok": False, "abort_on_fail": False}]
    caveats = build_achievement(comparison)["caveats"]
    crossed = [c for c in caveats if "k6 threshold" in c]
    assert len(crossed) == 1 and crossed[0].startswith("optimized: k6 threshold")
    assert "p(95)<10" in crossed[0] and "crossed" in crossed[0]
