from pathlib import Path

import pytest
from loadproof.errors import ExperimentError
from loadproof.experiment import DEFAULT_EXPERIMENT, load_experiment


def test_default_experiment_tells_the_seed_story() -> None:
    exp = load_experiment()
    assert exp.path == DEFAULT_EXPERIMENT
    assert (exp.baseline.profile, exp.candidate.profile) == ("baseline", "optimized")
    assert exp.plan.levels == (10, 50, 100, 150) and exp.plan.model == "vus"
    assert exp.probe_plan is not None and exp.probe_plan.model == "rate"
    # the demo's verdicts need replicated, interleaved arms, probe included
    assert exp.plan.repeat >= 3 and exp.probe_plan.repeat == exp.plan.repeat


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
