"""Experiment files: the arms, the stage plan, repeats, the SLO and the report's metadata.
Every mistake is an ExperimentError that names the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import ExperimentError, LoadproofError
from .faults import FaultSpec, check_faults, parse_fault
from .plan import StagePlan, make_plan
from .shards import MAX_GENERATORS

if TYPE_CHECKING:
    from .capacity import SearchSettings

DEFAULT_EXPERIMENT = Path(__file__).parent / "experiments" / "orchestrator.yaml"
TOP_KEYS = {"title", "name", "arms", "baseline", "candidate", "model", "stages",
            "stage_duration", "warmup", "repeat", "script", "slo", "capacity", "probe",
            "report", "generators",
            "faults"}
ARM_KEYS = {"profile", "target", "set"}
SLO_KEYS = {"p95_ms", "success", "min_successes"}
PROBE_KEYS = {"model", "stages", "stage_duration", "warmup", "script", "repeat"}
CAPACITY_KEYS = {"model", "min_rate", "max_rate", "precision", "trial_duration", "warmup",
                 "cooldown", "confirm", "budget", "script", "repeat", "slo"}
PROBE_DEPRECATED = ("probe: is deprecated: a fixed grid only bounds capacity between two of its "
                    "levels; use a capacity: block (a capacity search per arm, e.g. "
                    "capacity: {model: rate, precision: 0.1, trial_duration: 3s, script: submit})"
                    "; this file's probe still runs as before")
REPORT_KEYS = {"interview_value", "salary_target", "completion_date", "unit_cost",
               "achievement_type", "currency", "stack"}


@dataclass
class Arm:
    name: str
    profile: str | None = None
    target: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Experiment:
    name: str
    title: str
    baseline: Arm
    candidate: Arm
    plan: StagePlan
    script: str
    slo: dict[str, Any]
    probe_plan: StagePlan | None
    probe_script: str
    report: dict[str, Any]
    path: Path
    # a capacity search per arm (the ``capacity:`` block), repeated like the stages
    capacity: SearchSettings | None = None
    capacity_script: str = "submit"
    capacity_repeat: int = 1
    deprecations: list[str] = field(default_factory=list)
    # k6 processes per stage (execution segments): arms, probe and capacity searches alike
    generators: int = 1
    faults: list[FaultSpec] = field(default_factory=list)  # injected in the main plan's stages


def _fail(path: Path, key: str, message: str) -> ExperimentError:
    return ExperimentError(f"{path}: {key}: {message}", key=key, path=path)


def _check_keys(path: Path, where: str, data: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _fail(path, where, f"expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _fail(path, f"{where}.{unknown[0]}" if where else unknown[0],
                    f"unknown key; allowed: {', '.join(sorted(allowed))}")
    return data


def _typed(path: Path, key: str, value: Any, kinds: tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and bool not in kinds:
        raise _fail(path, key, f"expected {what}, got {value!r}")
    if not isinstance(value, kinds):
        raise _fail(path, key, f"expected {what}, got {value!r}")
    return value


def _plan(path: Path, prefix: str, data: dict[str, Any], defaults: dict[str, Any]) -> StagePlan:
    stages = data.get("stages", defaults.get("stages"))
    if not isinstance(stages, list) or not stages:
        raise _fail(path, f"{prefix}stages", "expected a list of load levels, e.g. [10, 50, 100]")
    for level in stages:
        _typed(path, f"{prefix}stages", level, (int,), "whole numbers")
    repeat = _typed(path, f"{prefix}repeat", data.get("repeat", defaults.get("repeat", 1)),
                    (int,), "a whole number")
    try:
        return make_plan(stages, model=str(data.get("model", defaults.get("model", "vus"))),
                         stage_duration=data.get("stage_duration",
                                                 defaults.get("stage_duration", "20s")),
                         warmup=data.get("warmup", defaults.get("warmup", 0)),
                         repeat=repeat)
    except LoadproofError as exc:
        flag = str(exc).split(" ", 1)[0].lstrip("-").replace("-", "_")
        raise _fail(path, f"{prefix}{flag if flag in PROBE_KEYS | {'repeat'} else 'stages'}",
                    str(exc)) from exc


def load_experiment(path: str | Path | None = None) -> Experiment:
    source = Path(path) if path else DEFAULT_EXPERIMENT
    if not source.is_file():
        raise ExperimentError(f"experiment file not found: {source}", path=source)
    try:
        data = yaml.safe_load(source.read_text())
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{source}: not valid YAML: {exc}", path=source) from exc
    data = _check_keys(source, "", data, TOP_KEYS)
    if "title" not in data:
        raise _fail(source, "title", "missing; give the report a title")
    title = _typed(source, "title", data["title"], (str,), "text")
    arms_data = data.get("arms")
    if not isinstance(arms_data, dict) or len(arms_data) != 2:
        raise _fail(source, "arms", "expected exactly two arms, e.g. baseline: {profile: "
                                    "baseline} and optimized: {profile: optimized}")
    arms = []
    for name, spec in arms_data.items():
        spec = _check_keys(source, f"arms.{name}", spec, ARM_KEYS)
        if ("profile" in spec) == ("target" in spec):
            raise _fail(source, f"arms.{name}", "give exactly one of profile or target")
        overrides = spec.get("set") or {}
        if "set" in spec:
            _check_keys(source, f"arms.{name}.set", overrides, set(overrides))
            if "target" in spec:
                raise _fail(source, f"arms.{name}.set", "only applies to a profile arm")
        if "target" in spec:
            target = _typed(source, f"arms.{name}.target", spec["target"], (str,), "a URL")
            if not target.startswith(("http://", "https://")):
                raise _fail(source, f"arms.{name}.target", f"{target!r} is not an http(s) URL")
        if "profile" in spec:
            from loadproof.orchestrator.settings import ProfileError, load_settings

            try:
                load_settings(str(spec["profile"]), **overrides)
            except ProfileError as exc:
                key = f"arms.{name}.set" if overrides and "setting" in str(exc) \
                    else f"arms.{name}.profile"
                raise _fail(source, key, str(exc)) from exc
        arms.append(Arm(str(name), spec.get("profile"), spec.get("target"), dict(overrides)))
    by_name = {a.name: a for a in arms}
    base_name = data.get("baseline", arms[0].name)
    cand_name = data.get("candidate", arms[1].name if base_name == arms[0].name else arms[0].name)
    for key, value in (("baseline", base_name), ("candidate", cand_name)):
        if value not in by_name:
            raise _fail(source, key, f"{value!r} is not one of the arms ({', '.join(by_name)})")
    if base_name == cand_name:
        raise _fail(source, "candidate", "must differ from the baseline arm")
    plan = _plan(source, "", data, {})
    slo = _check_keys(source, "slo", data.get("slo") or {}, SLO_KEYS)
    for key, kinds in (("p95_ms", (int, float)), ("success", (int, float)),
                       ("min_successes", (int,))):
        if key in slo:
            _typed(source, f"slo.{key}", slo[key], kinds, "a number")
    if "success" in slo and not 0 < slo["success"] <= 1:
        raise _fail(source, "slo.success", "a share between 0 and 1, e.g. 0.99")
    probe_plan = None
    probe_script = "submit"
    if data.get("probe"):
        probe = _check_keys(source, "probe", data["probe"], PROBE_KEYS)
        probe_plan = _plan(source, "probe.", probe, {"model": "rate", "repeat": plan.repeat})
        probe_script = str(probe.get("script", "submit"))
    deprecations = []
    if data.get("probe"):
        deprecations.append(f"{source}: {PROBE_DEPRECATED}")
    capacity, capacity_script, capacity_repeat = _capacity(source, data, slo, plan.repeat)
    report = _check_keys(source, "report", data.get("report") or {}, REPORT_KEYS)
    stack = report.get("stack", [])
    if not isinstance(stack, list) or not all(isinstance(t, str) for t in stack):
        raise _fail(source, "report.stack", "expected a list of names, e.g. [Go, Redis]")
    if report.get("unit_cost") is not None:
        _typed(source, "report.unit_cost", report["unit_cost"], (int, float), "a number")
    generators = _typed(source, "generators", data.get("generators", 1), (int,),
                        "a whole number of k6 processes per stage")
    if not 1 <= generators <= MAX_GENERATORS:
        raise _fail(source, "generators", f"{generators} is outside 1 to {MAX_GENERATORS}")
    fault_specs = _faults(source, data.get("faults"), plan,
                          [by_name[base_name], by_name[cand_name]])
    name = str(data.get("name") or source.stem)
    return Experiment(name=name, title=title, baseline=by_name[base_name],
                      candidate=by_name[cand_name], plan=plan,
                      script=str(data.get("script", "journey")), slo=slo,
                      probe_plan=probe_plan, probe_script=probe_script, report=report,
                      path=source, capacity=capacity, capacity_script=capacity_script,
                      capacity_repeat=capacity_repeat, deprecations=deprecations,
                      generators=generators, faults=fault_specs)


def _capacity(path: Path, data: dict[str, Any], slo: dict[str, Any],
              repeat: int) -> tuple[SearchSettings | None, str, int]:
    """The ``capacity:`` block as search settings (its SLO from ``slo`` unless it gives its
    own), the script and how many searches each arm gets (the experiment's ``repeat``)."""
    if data.get("capacity") is None:
        return None, "submit", 1
    if data.get("probe"):
        raise _fail(path, "probe", "give capacity: or probe:, not both (probe: is deprecated)")
    block = _check_keys(path, "capacity", data["capacity"] or {}, CAPACITY_KEYS)
    own_slo = _check_keys(path, "capacity.slo", block.get("slo") or {}, {"p95_ms", "success"})
    for key in ("p95_ms", "success"):
        if key in own_slo:
            _typed(path, f"capacity.slo.{key}", own_slo[key], (int, float), "a number")
    for key in ("min_rate", "max_rate", "confirm", "repeat"):
        if key in block:
            _typed(path, f"capacity.{key}", block[key], (int,), "a whole number")
    if "precision" in block:
        _typed(path, "capacity.precision", block["precision"], (int, float), "a number")
    from .capacity import make_settings
    from .errors import UsageError

    try:
        settings = make_settings(
            slo_p95_ms=float(own_slo.get("p95_ms", slo.get("p95_ms", 400.0))),
            slo_success=float(own_slo.get("success", slo.get("success", 0.99))),
            model=str(block.get("model", "rate")), min_rate=block.get("min_rate"),
            max_rate=block.get("max_rate"), precision=float(block.get("precision", 0.05)),
            trial_duration=block.get("trial_duration", "10s"),
            warmup=block.get("warmup", "2s"), cooldown=block.get("cooldown", "2s"),
            confirm=int(block.get("confirm", 1)), budget=block.get("budget", "10m"))
    except UsageError as exc:
        flag = str(exc).split(" ", 1)[0]
        key = flag.lstrip("-").replace("-", "_") if flag.startswith("--") else ""
        key = {"slo_p95_ms": "slo.p95_ms", "slo_success": "slo.success"}.get(key, key)
        raise _fail(path, f"capacity.{key}" if key else "capacity", str(exc)) from exc
    searches = int(block.get("repeat", repeat))
    if searches < 1:
        raise _fail(path, "capacity.repeat", "at least 1 search per arm")
    return settings, str(block.get("script", "submit")), searches


def _faults(path: Path, data: Any, plan: StagePlan, arms: list[Arm]) -> list[FaultSpec]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise _fail(path, "faults", "expected a list of faults (name, stage, at, duration, "
                                    "action or start/stop)")
    specs = []
    for i, item in enumerate(data):
        where = f"faults[{i}]"
        if not isinstance(item, dict):
            raise _fail(path, where, f"expected a mapping, got {type(item).__name__}")
        try:
            specs.append(parse_fault(item, where=where))
        except LoadproofError as exc:
            raise ExperimentError(f"{path}: {exc}", key=where, path=path) from exc
    for arm in arms:
        try:
            check_faults(specs, plan, has_service=arm.profile is not None, script_driven=False,
                         where=f"faults (arm {arm.name}):")
        except LoadproofError as exc:
            raise ExperimentError(f"{path}: {exc}", key="faults", path=path) from exc
    return specs
