from pathlib import Path

import pytest
from loadproof.errors import ExperimentError
from loadproof.experiment import DEFAULT_EXPERIMENT, load_experiment


def test_default_experiment_tells_the_seed_story() -> None:
    exp = load_experiment()
    assert exp.path == DEFAULT_EXPERIMENT
    assert (exp.baseline.profile, exp.candidate.profile) == ("baseline", "optimized")
    assert exp.plan.levels == (10, 50, 100, 150) and exp.plan.model == "vus"
    assert exp.probe_plan is None and not exp.deprecations
    assert exp.capacity is not None and exp.capacity.model == "rate"
    # the demo's verdicts need replicated, interleaved arms, capacity searches included
    assert exp.plan.repeat >= 3 and exp.capacity_repeat == exp.plan.repeat
    assert exp.capacity.slo_p95_ms == exp.slo["p95_ms"]  # the SLO comes from slo:


ARMS = "title: t\narms: {a: {profile: baseline}, b: {profile: optimized}}\nstages: [10]\n"


def test_a_probe_still_runs_with_a_deprecation_message(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(ARMS + "probe: {stages: [100, 200]}\n")
    exp = load_experiment(path)
    assert exp.probe_plan is not None and exp.probe_plan.levels == (100, 200)
    assert exp.capacity is None
    assert len(exp.deprecations) == 1 and "capacity:" in exp.deprecations[0]
    assert str(path) in exp.deprecations[0]


def test_the_capacity_block_becomes_search_settings(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(ARMS + "repeat: 3\nslo: {p95_ms: 250, success: 0.98}\n"
                    "capacity: {precision: 0.2, trial_duration: 4s, budget: 2m, "
                    "script: quick, min_rate: 50, repeat: 2}\n")
    exp = load_experiment(path)
    assert exp.capacity is not None
    assert (exp.capacity.slo_p95_ms, exp.capacity.slo_success) == (250, 0.98)
    assert (exp.capacity.precision, exp.capacity.trial_duration_s) == (0.2, 4.0)
    assert (exp.capacity.budget_s, exp.capacity.min_level) == (120.0, 50)
    assert (exp.capacity_script, exp.capacity_repeat) == ("quick", 2)
    path.write_text(ARMS + "slo: {p95_ms: 250}\ncapacity: {slo: {p95_ms: 50}}\n")
    assert load_experiment(path).capacity.slo_p95_ms == 50  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "key"), [
    ("arms: {a: {profile: baseline}, b: {profile: optimized}}\nstages: [10]\n", "title"),
    ("title: t\narms: {a: {profile: baseline}}\nstages: [10]\n", "arms"),
    ("title: t\narms: {a: {profile: baseline}, b: {profile: optimized}}\nstages: [10]\n"
     "colour: red\n", "colour"),
    ("title: t\narms: {a: {profile: baseline}, b: {url: x}}\nstages: [10]\n", "arms.b.url"),
    ("title: t\narms: {a: {profile: baseline}, b: {profile: optimized}}\nstages: ten\n", "stages"),
    ("title: t\narms: {a: {profile: baseline}, b: {profile: optimized}}\nstages: [10]\n"
     "repeat: two\n", "repeat"),
    ("title: t\narms: {a: {profile: baseline}, b: {profile: optimized}}\nstages: [10]\n"
     "slo: {success: 99}\n", "slo.success"),
    ("title: t\narms: {a: {profile: baseline}, b: {target: 'ftp://x'}}\nstages: [10]\n",
     "arms.b.target"),
    ("title: t\narms: {a: {profile: baseline}, b: {profile: optimized}}\nstages: [10]\n"
     "baseline: c\n", "baseline"),
    ("title: t\narms: {a: {profile: baseline}, b: {profile: fastest}}\nstages: [10]\n",
     "arms.b.profile"),
    ("title: t\narms: {a: {profile: baseline}, b: {profile: optimized, set: {pool_sise: 3}}}\n"
     "stages: [10]\n", "arms.b.set"),
    (ARMS + "capacity: {precision: 2}\n", "capacity.precision"),
    (ARMS + "capacity: {min_rate: 100, max_rate: 50}\n", "capacity.max_rate"),
    (ARMS + "capacity: {trial_duration: soon}\n", "capacity.trial_duration"),
    (ARMS + "capacity: {model: open}\n", "capacity.model"),
    (ARMS + "capacity: {speed: 3}\n", "capacity.speed"),
    (ARMS + "capacity: {slo: {p95_ms: -1}}\n", "capacity.slo.p95_ms"),
    (ARMS + "capacity: {repeat: 0}\n", "capacity.repeat"),
    (ARMS + "capacity: {}\nprobe: {stages: [10]}\n", "probe"),
])
def test_mistakes_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert info.value.key == key
    assert f": {key}:" in str(info.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="not found"):
        load_experiment(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: [unclosed\n")
    with pytest.raises(ExperimentError, match="not valid YAML"):
        load_experiment(bad)
