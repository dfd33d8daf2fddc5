"""A/A calibration: synthetic runs with known run-to-run noise and within-run drift, written in
the run-store format and compared by the same code as real runs, to count how often the
comparison claims a difference where there is none (bench/aa_calibration.py prints it)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .compare import Slo, apply_claim_family, compare_stages, headline_claims
from .ingest import REQUEST_SCHEMA
from .metrics import stage_metrics
from .store import FORMAT_VERSION, Run, atomic_write_json

Samples = tuple[list[float], list[int]]  # durations_ms, statuses
CLAIM_WORDS = ("improved", "regressed", "trade-off")


def write_run(root: Path, label: str, stages: dict[str, tuple[int, list[Samples]]], *,
              model: str = "vus", duration_s: float = 10.0, status: str = "complete",
              dropped: int = 0, start: datetime | None = None) -> Run:
    """A stored run whose repeats have their own samples: stage key -> (level, [samples of
    repeat 1, repeat 2, ...]). Requests are spread evenly over each stage's duration."""
    path = root / label
    records = []
    origin = start or datetime(2026, 1, 1, tzinfo=UTC)
    repeats = max(len(per_repeat) for _, per_repeat in stages.values())
    for index, (key, (level, per_repeat)) in enumerate(stages.items(), start=1):
        for repeat, (durations, statuses) in enumerate(per_repeat, start=1):
            folder = f"r{repeat}-{key}"
            n = len(durations)
            stage_start = origin + timedelta(hours=repeat, minutes=index)
            offsets = np.linspace(0, duration_s * 1e6, n, endpoint=False).astype(np.int64)
            epoch_us = int(stage_start.timestamp() * 1e6)
            frame = pl.DataFrame({
                "timestamp": pl.from_epoch(pl.Series(epoch_us + offsets), time_unit="us")
                .dt.replace_time_zone("UTC"),
                "duration_ms": np.asarray(durations, dtype=float),
                "status": statuses, "expected": [200 <= s < 400 for s in statuses],
                "name": ["GET /"] * n, "method": ["GET"] * n, "error_code": [0] * n,
                "stage": [key] * n, "repeat": [repeat] * n,
            }).cast(dict(REQUEST_SCHEMA))  # type: ignore[arg-type]
            (path / "stages" / folder).mkdir(parents=True)
            frame.write_parquet(path / "stages" / folder / "requests.parquet")
            records.append({"dir": folder, "key": key, "index": index, "repeat": repeat,
                            "level": level, "model": model, "duration_s": duration_s,
                            "warmup_s": 0.0, "status": "complete", "requests": n,
                            "dropped_iterations": dropped,
                            "requests_file": f"stages/{folder}/requests.parquet"})
    levels = [v[0] for v in stages.values()]
    manifest = {"format_version": FORMAT_VERSION, "run_id": f"run-{label}", "label": label,
                "status": status, "status_reason": None, "target": "http://127.0.0.1:1",
                "profile": None, "plan": {"model": model, "levels": levels,
                                          "duration_s": duration_s, "warmup_s": 0.0,
                                          "repeat": repeats},
                "script": None, "k6": {"version": "v1.1.0"}, "commit_info": None,
                "machine_info": {}, "started_at": None, "ended_at": None, "stages": records}
    atomic_write_json(path / "manifest.json", manifest)
    return Run(path, manifest)


@dataclass(frozen=True)
class Noise:
    """How one arm's repeats vary with no change at all between the arms."""

    run_noise: float = 0.03  # sd of a repeat's log latency and log rate factor
    drift: float = 0.05  # sd of a repeat's log-latency drift from the stage's start to its end
    requests_per_user_s: float = 8.0
    median_ms: float = 20.0
    sigma: float = 0.6  # lognormal spread of single requests
    error_share: float = 0.002


def simulate_arm(rng: np.random.Generator, root: Path, label: str, levels: tuple[int, ...],
                 repeats: int, duration_s: float, noise: Noise) -> Run:
    stages: dict[str, tuple[int, list[Samples]]] = {}
    for index, level in enumerate(levels, start=1):
        per_repeat: list[Samples] = []
        median = noise.median_ms * (1 + level / 100)
        for _ in range(repeats):
            factor = float(np.exp(rng.normal(0, noise.run_noise)))
            rate = noise.requests_per_user_s * level * float(np.exp(rng.normal(0, noise.run_noise)))
            n = int(rng.poisson(rate * duration_s))
            when = np.sort(rng.uniform(0, 1, n))
            slope = rng.normal(0, noise.drift)
            latency = np.exp(np.log(median * factor) + slope * (when - 0.5)
                             + rng.normal(0, noise.sigma, n))
            share = min(noise.error_share * float(np.exp(rng.normal(0, 0.3))), 1.0)
            statuses = np.where(rng.uniform(0, 1, n) < share, 500, 200)
            per_repeat.append((latency.tolist(), statuses.tolist()))
        stages[f"s{index}-{level}vus"] = (level, per_repeat)
    return write_run(root, label, stages, duration_s=duration_s)


def aa_rates(comparisons: int, *, seed: int = 1, repeats: int = 3,
             levels: tuple[int, ...] = (10, 50, 100, 150), duration_s: float = 6.0,
             noise: Noise | None = None) -> dict[str, Any]:
    """Simulated A/A comparisons: the share of single comparisons called significant (stage x
    metric, before the claim family's correction) and the share of reports making any claim."""
    noise = noise or Noise()
    rng = np.random.default_rng(seed)
    significant = tested = reports_with_claims = 0
    examples: list[list[tuple[str, str, str]]] = []
    with tempfile.TemporaryDirectory(prefix="loadproof-aa-") as tmp:
        for number in range(comparisons):
            root = Path(tmp) / f"aa{number}"
            base = simulate_arm(rng, root, "a", levels, repeats, duration_s, noise)
            cand = simulate_arm(rng, root, "b", levels, repeats, duration_s, noise)
            stages = compare_stages(stage_metrics(base), stage_metrics(cand), Slo(), rng)
            apply_claim_family(stages)
            for stage in stages:
                for metric in stage.metrics.values():
                    if metric.ci95 is not None and metric.p_value is not None:
                        tested += 1
                        significant += metric.verdict in CLAIM_WORDS
            claims = headline_claims(stages)
            if claims:
                reports_with_claims += 1
                examples.append(claims)
    return {"comparisons": comparisons, "repeats": repeats, "levels": list(levels),
            "noise": noise, "tested": tested,
            "per_comparison_rate": significant / tested if tested else None,
            "per_report_rate": reports_with_claims / comparisons if comparisons else None,
            "claims": examples}
