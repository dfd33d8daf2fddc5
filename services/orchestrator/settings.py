"""One settings class for the reference service: profile file < environment < explicit overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROFILES_DIR = Path(__file__).parent / "profiles"


class ProfileError(ValueError):
    """A profile name, file or value that cannot be used; the message names it."""


class Settings(BaseSettings):
    """Every knob of the service. Environment variables use the ORCHESTRATOR_ prefix."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="forbid")

    profile: str = "custom"
    database_url: str | None = Field(default=None, description="None starts embedded PostgreSQL")
    data_dir: Path | None = Field(default=None, description="embedded PostgreSQL data folder")

    # connection pool
    pool_size: int = Field(default=5, ge=1, le=200)
    max_overflow: int = Field(default=0, ge=0, le=500)
    pool_timeout_s: float = Field(default=30.0, gt=0)
    pool_recycle_s: int = -1
    pool_pre_ping: bool = False
    # with pre-ping on: skip the ping for a connection checked in less than this many seconds
    # ago (HikariCP's "alive bypass window"); 0 pings on every checkout, as SQLAlchemy does
    pool_pre_ping_window_s: float = Field(default=0.0, ge=0)

    # admission control on the database bulkhead's queue (resilience.AdaptiveLimit): while a
    # queue stands (every wait in a window over admission_target_s) at most
    # db_concurrency + drain rate x admission_max_wait_s requests are admitted, the rest refused
    # with 429 at once; with no standing queue, admission_max_limit. Needs db_concurrency
    admission_enabled: bool = False
    admission_target_s: float = Field(default=0.005, gt=0)
    admission_window_s: float = Field(default=0.1, gt=0)
    admission_min_samples: int = Field(default=10, ge=1)
    admission_standing_windows: int = Field(default=1, ge=1, le=100)
    admission_max_wait_s: float = Field(default=0.2, gt=0)
    admission_min_limit: int = Field(default=16, ge=1)
    admission_max_limit: int = Field(default=500, ge=1)

    # hard cap on requests/s (token bucket), applied before the adaptive limit
    rate_limit_enabled: bool = False
    rate_limit_rps: float = Field(default=1000.0, gt=0)
    rate_limit_burst: int = Field(default=200, ge=1)

    # circuit breaker around the database
    breaker_enabled: bool = False
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_timeout_s: float = Field(default=2.0, gt=0)

    # bulkhead: at most this many API requests use the database at once, the rest wait their
    # turn in the process (within the request deadline); 0 disables it
    db_concurrency: int = Field(default=0, ge=0, le=1000)

    # per-request deadline in seconds; 0 disables it
    request_timeout_s: float = Field(default=0.0, ge=0)

    # service processes sharing the listening socket (pre-fork, as gunicorn -w N); each has
    # its own pools, bulkhead, admission control and workers, so per-process limits multiply
    processes: int = Field(default=1, ge=1, le=64)

    # background workers
    separate_worker_pool: bool = False
    worker_pool_size: int = Field(default=4, ge=1, le=100)
    workers: int = Field(default=4, ge=0, le=64)
    worker_batch: int = Field(default=1, ge=1, le=1000)
    worker_idle_sleep_s: float = Field(default=0.05, gt=0)

    # Python's cyclic GC: freeze start-up objects and collect young objects less often, so
    # full collections (pauses of tens of ms on a busy heap) are rare; off keeps defaults
    gc_tuning: bool = False
    # POST /task and GET /task/{id} as plain ASGI (fastpath.py)
    fast_path: bool = False
    # submissions that arrive together share one INSERT and one commit (groupcommit.py):
    # at most group_commit_flushers such transactions at once, of up to group_commit_max_rows
    group_commit: bool = False
    group_commit_flushers: int = Field(default=2, ge=1, le=100)
    group_commit_max_rows: int = Field(default=200, ge=1, le=10_000)

    # request limits
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    list_limit_max: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _admission_limits_ordered(self) -> Settings:
        if self.admission_min_limit > self.admission_max_limit:
            raise ValueError("admission limits must satisfy admission_min_limit <= "
                             f"admission_max_limit, not {self.admission_min_limit}, "
                             f"{self.admission_max_limit}")
        if self.admission_enabled and not self.db_concurrency:
            raise ValueError("admission control watches the database bulkhead's queue: set "
                             "db_concurrency above 0")
        return self

    def knobs(self) -> dict[str, Any]:
        """The settings that shape behaviour, for manifests and reports (no secrets, no paths)."""
        return self.model_dump(exclude={"database_url", "data_dir"}, mode="json")


def profile_path(profile: str) -> Path:
    """Resolve a profile name (baseline, optimized) or a path to a TOML file."""
    candidate = Path(profile)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise ProfileError(f"profile file not found: {candidate}")
        return candidate
    named = PROFILES_DIR / f"{profile}.toml"
    if not named.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
        raise ProfileError(f"unknown profile {profile!r}: use one of {known} or a path to a .toml")
    return named


def load_settings(profile: str = "baseline", **overrides: Any) -> Settings:
    """Build settings from a profile, then ORCHESTRATOR_* environment, then ``overrides``."""
    path = profile_path(profile)
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from exc
    name = path.stem if path.parent == PROFILES_DIR else str(path)
    values.setdefault("profile", name)
    explicit = {k: v for k, v in overrides.items() if v is not None}

    class _FromProfile(Settings):
        # init kwargs (the profile file) rank below the environment here; explicit
        # overrides are applied after, so they win over both.
        @classmethod
        def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return env_settings, init_settings

    try:
        merged = _FromProfile(**values).model_dump()
        merged.update(explicit)
        return Settings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ProfileError(f"{path}: setting {key!r}: {first['msg']}") from exc
