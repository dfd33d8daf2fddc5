import pytest
from loadproof.errors import UsageError
from loadproof.plan import make_plan, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("1m30s", 90), ("500ms", 0.5),
                                               ("2", 2), (3, 3), ("1h", 3600)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "1s2", "s10"])
def test_bad_duration_names_the_flag(text: str) -> None:
    with pytest.raises(UsageError, match="--stage-duration"):
        make_plan("10", stage_duration=text)


def test_plan_stages_and_keys() -> None:
    plan = make_plan("10,50", stage_duration="5s", warmup="1s", repeat=2)
    assert [s.key for s in plan.stages] == ["s1-10vus", "s2-50vus"]
    assert plan.stages[1].label == "Stage 2 (50 users)"
    rate = make_plan([100], model="rate", stage_duration=2)
    assert rate.stages[0].key == "s1-100rps"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"stages": "0,10"}, "above 0"),
    ({"stages": "-5"}, "above 0"),
    ({"stages": "ten"}, "not a whole number"),
    ({"stages": ""}, "empty"),
    ({"stages": "10", "stage_duration": "500ms"}, "under the minimum of 1s"),
    ({"stages": "10", "repeat": 0}, "--repeat"),
    ({"stages": "10", "model": "closed"}, "--model"),
])
def test_nonsense_plans_are_usage_errors(kwargs: dict, message: str) -> None:
    stages = kwargs.pop("stages")
    with pytest.raises(UsageError, match=message):
        make_plan(stages, **kwargs)


def test_same_shape() -> None:
    a = make_plan("10,50", stage_duration="5s")
    assert a.same_shape(make_plan("10,50", stage_duration="5s", repeat=3))
    assert not a.same_shape(make_plan("10,60", stage_duration="5s"))
    assert not a.same_shape(make_plan("10,50", stage_duration="6s"))
