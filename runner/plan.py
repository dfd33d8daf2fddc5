"""Stage plans: the load levels of a run, closed model (virtual users) or open model
(arrival rate in requests/s), each with a measured duration and an optional warm-up; or, when
the script drives the load (model ``script``), the stages the script's own shape made."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .errors import UsageError

Model = Literal["vus", "rate"]
MODELS: tuple[str, ...] = ("vus", "rate")
SCRIPT_MODEL = "script"  # the plan of a run whose script shaped its own load
MAX_LEVEL = 100_000

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float | int, *, what: str = "duration") -> float:
    """'30s', '1m30s', '500ms' or a number of seconds -> seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise UsageError(f"{what} {value!r} is not a duration: use e.g. 30s, 1m30s or 500ms")
    return total


def format_duration(seconds: float) -> str:
    """Seconds -> a k6 duration string."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{int(round(seconds * 1000))}ms"


@dataclass(frozen=True)
class Stage:
    index: int  # 1-based position in the plan
    level: int  # virtual users (vus) or requests/s (rate)
    model: str
    duration_s: float
    warmup_s: float = 0.0
    # script-driven stages: the scenario's name, or the options.stages step ("3vus")
    name: str | None = None
    source: dict[str, Any] | None = None  # what the script asked for (executor or step)

    @property
    def key(self) -> str:
        if self.name is not None:
            return f"s{self.index}-{self.name}"
        unit = "vus" if self.model == "vus" else "rps"
        return f"s{self.index}-{self.level}{unit}"

    @property
    def label(self) -> str:
        unit = "users" if self.model == "vus" else "req/s"
        if self.name is not None:
            return f"Stage {self.index} ({self.name}, up to {self.level} {unit})"
        return f"Stage {self.index} ({self.level} {unit})"

    def k6_scenarios(self, generators: int = 1, gap_s: float = 0.0) -> dict[str, dict[str, Any]]:
        """The k6 scenarios of a loadproof-driven stage: ``warmup`` (kept out of the
        figures) then ``main``; the same shapes as runner/k6/lib/loadproof.js builds.
        ``generators``: the k6 processes the stage is split over (execution segments). With
        ``gap_s`` (a stage whose server metrics are scraped) ``main`` starts that long after
        the warm-up, whose iterations are stopped half-way into the gap."""
        scenarios = {}
        if self.warmup_s:
            scenarios["warmup"] = _scenario(self.model, self.level,
                                            format_duration(self.warmup_s), "0s", generators)
            if gap_s:
                scenarios["warmup"]["gracefulStop"] = format_duration(gap_s / 2)
        scenarios["main"] = _scenario(self.model, self.level, format_duration(self.duration_s),
                                      format_duration(self.warmup_s + gap_s), generators)
        return scenarios


def split_vus(vus: int, generators: int) -> int:
    """``vus`` rounded up to a multiple of ``generators``: k6 splits an arrival-rate
    scenario's VUs over execution segments, so each generator gets the same share."""
    return -(-vus // generators) * generators


def _scenario(model: str, level: int, duration: str, start: str,
              generators: int = 1) -> dict[str, Any]:
    if model == "rate":
        return {"executor": "constant-arrival-rate", "rate": level, "timeUnit": "1s",
                "duration": duration,
                "preAllocatedVUs": split_vus(min(max(20, -(-level // 4)), 1000), generators),
                "maxVUs": split_vus(max(100, level), generators), "startTime": start,
                "gracefulStop": "5s"}
    return {"executor": "constant-vus", "vus": level, "duration": duration, "startTime": start,
            "gracefulStop": "5s"}


@dataclass(frozen=True)
class StagePlan:
    model: str
    levels: tuple[int, ...]
    duration_s: float
    warmup_s: float = 0.0
    repeat: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    shape: tuple[Stage, ...] = ()  # model "script": the stages the script's shape made

    def __post_init__(self) -> None:
        if self.model == SCRIPT_MODEL:
            if not self.shape:
                raise UsageError("a script-driven plan needs at least one scenario or stage")
            if not isinstance(self.repeat, int) or self.repeat < 1:
                raise UsageError(f"--repeat {self.repeat!r} must be a whole number of at least 1")
            return
        if self.model not in MODELS:
            raise UsageError(f"--model {self.model!r}: use 'vus' (closed model) or 'rate' (open)")
        if not self.levels:
            raise UsageError("--stages is empty: give at least one load level, e.g. 10,50,100")
        for level in self.levels:
            if not isinstance(level, int) or isinstance(level, bool) or level <= 0:
                raise UsageError(f"--stages: level {level!r} must be a whole number above 0")
            if level > MAX_LEVEL:
                raise UsageError(f"--stages: level {level} is above the limit of {MAX_LEVEL}")
        if self.duration_s < 1.0:
            raise UsageError(f"--stage-duration {self.duration_s:g}s is under the minimum of 1s")
        if self.warmup_s < 0:
            raise UsageError("--warmup cannot be negative")
        if not isinstance(self.repeat, int) or self.repeat < 1:
            raise UsageError(f"--repeat {self.repeat!r} must be a whole number of at least 1")

    @property
    def stages(self) -> list[Stage]:
        if self.model == SCRIPT_MODEL:
            return list(self.shape)
        return [Stage(i + 1, level, self.model, self.duration_s, self.warmup_s)
                for i, level in enumerate(self.levels)]

    def same_shape(self, other: StagePlan) -> bool:
        """Stage-by-stage comparable: same model, levels and measured duration (for
        script-driven plans: the same stages, executors or steps, and durations)."""
        if SCRIPT_MODEL in (self.model, other.model):
            def shape(plan: StagePlan) -> list[tuple[Any, ...]]:
                return [(s.key, s.model, s.level, s.duration_s) for s in plan.stages]
            return self.model == other.model and shape(self) == shape(other)
        return (self.model, self.levels, self.duration_s) == (other.model, other.levels,
                                                               other.duration_s)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["levels"] = list(self.levels)
        data.pop("extra")
        data.pop("shape")
        if self.model == SCRIPT_MODEL:
            data["stages"] = [{"key": s.key, **asdict(s)} for s in self.shape]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StagePlan:
        shape = tuple(Stage(index=int(s["index"]), level=int(s["level"]), model=str(s["model"]),
                            duration_s=float(s["duration_s"]), name=s.get("name"),
                            source=s.get("source"))
                      for s in data.get("stages") or [])
        return cls(model=data["model"], levels=tuple(data["levels"]),
                   duration_s=float(data["duration_s"]), warmup_s=float(data.get("warmup_s", 0)),
                   repeat=int(data.get("repeat", 1)), shape=shape)


def parse_levels(text: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    items: list[Any]
    if isinstance(text, list | tuple):
        items = list(text)
    else:
        items = [part.strip() for part in str(text).split(",") if part.strip()]
    levels = []
    for item in items:
        try:
            level = int(item)
        except (TypeError, ValueError):
            raise UsageError(f"--stages: {item!r} is not a whole number; "
                             "use a comma-separated list such as 10,50,100,150") from None
        levels.append(level)
    return tuple(levels)


def make_plan(stages: str | list[int] | tuple[int, ...], *, model: str = "vus",
              stage_duration: str | float = "30s", warmup: str | float = 0,
              repeat: int = 1) -> StagePlan:
    """Validate user input into a StagePlan; every problem is a UsageError naming the flag."""
    return StagePlan(model=model, levels=parse_levels(stages),
                     duration_s=parse_duration(stage_duration, what="--stage-duration"),
                     warmup_s=parse_duration(warmup, what="--warmup"), repeat=repeat)


def _per_second(rate: Any, time_unit: Any) -> float:
    unit_s = parse_duration(time_unit or "1s", what="timeUnit")
    return float(rate or 0) / unit_s if unit_s > 0 else 0.0


def _scenario_stage(index: int, name: str, scenario: dict[str, Any]) -> Stage:
    """What one of the script's own scenarios asks for: its level (the most VUs or the
    highest arrival rate per second it plans), model and planned duration (0 when iterations,
    not time, end it)."""
    executor = str(scenario.get("executor") or "per-vu-iterations")
    steps = scenario.get("stages") or []
    duration_s = 0.0
    if executor in ("constant-arrival-rate", "ramping-arrival-rate"):
        model = "rate"
        unit = scenario.get("timeUnit")
        if executor == "constant-arrival-rate":
            peak = _per_second(scenario.get("rate"), unit)
            duration_s = parse_duration(scenario.get("duration") or 0, what="duration")
        else:
            peak = max([_per_second(scenario.get("startRate"), unit)]
                       + [_per_second(s.get("target"), unit) for s in steps])
            duration_s = sum(parse_duration(s.get("duration") or 0) for s in steps)
    else:
        model = "vus"
        if executor == "ramping-vus":
            peak = max([float(scenario.get("startVUs") or 0)]
                       + [float(s.get("target") or 0) for s in steps])
            duration_s = sum(parse_duration(s.get("duration") or 0) for s in steps)
        else:
            peak = float(scenario.get("vus") or 1)
            if executor in ("constant-vus", "externally-controlled"):
                duration_s = parse_duration(scenario.get("duration") or 0, what="duration")
    slug = re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-") or "scenario"
    source = {"scenario": name, "executor": executor,
              **{k: v for k, v in scenario.items() if v is not None and k != "executor"}}
    return Stage(index, max(1, round(peak)), model, duration_s, name=slug, source=source)


def script_plan(options: dict[str, Any], *, repeat: int = 1) -> StagePlan:
    """The plan of a script-driven run from the script's options (``k6 inspect``): one stage
    per scenario (in start order), or one per ``options.stages`` step, or one for a script
    shaped by ``vus``/``duration``/``iterations`` (or by nothing: k6's 1 VU, 1 iteration)."""
    shape: list[Stage] = []
    scenarios = options.get("scenarios") or {}
    steps = options.get("stages") or []
    if scenarios:
        ordered = sorted(scenarios.items(), key=lambda kv: (
            parse_duration(kv[1].get("startTime") or 0, what="startTime"), kv[0]))
        shape = [_scenario_stage(i + 1, name, sc) for i, (name, sc) in enumerate(ordered)]
    elif steps:
        previous = 0
        for i, step in enumerate(steps):
            target = int(step.get("target") or 0)
            duration_s = parse_duration(step.get("duration") or 0, what="options.stages duration")
            shape.append(Stage(i + 1, target, "vus", duration_s, name=f"{target}vus",
                               source={"step": i + 1, "from_vus": previous, "to_vus": target,
                                       "duration": step.get("duration")}))
            previous = target
    else:
        vus, duration, iterations = (options.get("vus"), options.get("duration"),
                                     options.get("iterations"))
        if duration and not iterations:
            scenario = {"executor": "constant-vus", "vus": vus or 1, "duration": duration}
        elif iterations:
            scenario = {"executor": "shared-iterations", "vus": vus or 1,
                        "iterations": iterations}
        else:
            scenario = {"executor": "per-vu-iterations", "vus": vus or 1, "iterations": 1}
        shape = [_scenario_stage(1, "default", scenario)]
    return StagePlan(model=SCRIPT_MODEL, levels=tuple(s.level for s in shape),
                     duration_s=sum(s.duration_s for s in shape), repeat=repeat,
                     shape=tuple(shape))
