"""Stage plans: the load levels of a run, closed model (virtual users) or open model
(arrival rate in requests/s), each with a measured duration and an optional warm-up."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .errors import UsageError

Model = Literal["vus", "rate"]
MODELS: tuple[str, ...] = ("vus", "rate")
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

    @property
    def key(self) -> str:
        unit = "vus" if self.model == "vus" else "rps"
        return f"s{self.index}-{self.level}{unit}"

    @property
    def label(self) -> str:
        unit = "users" if self.model == "vus" else "req/s"
        return f"Stage {self.index} ({self.level} {unit})"


@dataclass(frozen=True)
class StagePlan:
    model: str
    levels: tuple[int, ...]
    duration_s: float
    warmup_s: float = 0.0
    repeat: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
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
        return [Stage(i + 1, level, self.model, self.duration_s, self.warmup_s)
                for i, level in enumerate(self.levels)]

    def same_shape(self, other: StagePlan) -> bool:
        """Stage-by-stage comparable: same model, levels and measured duration."""
        return (self.model, self.levels, self.duration_s) == (other.model, other.levels,
                                                               other.duration_s)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["levels"] = list(self.levels)
        data.pop("extra")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StagePlan:
        return cls(model=data["model"], levels=tuple(data["levels"]),
                   duration_s=float(data["duration_s"]), warmup_s=float(data.get("warmup_s", 0)),
                   repeat=int(data.get("repeat", 1)))


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
