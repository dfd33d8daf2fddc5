"""``loadproof runs``: one line per stored run, newest first, read from manifests alone.

Every folder in the run store is listed. A folder that is not a readable run (no manifest,
a manifest that does not parse or lacks its keys, a manifest still marked ``running``, a
stage whose files are gone) is listed with its problem instead of being skipped. Nothing here
reads stage data, so listing stays fast on big stores.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import RunStoreError

# the manifest keys a run needs (as store.load_run checks)
REQUIRED_KEYS = ("format_version", "run_id", "label", "status", "stages")
CORRUPT = "corrupt"  # the status shown for a folder whose manifest cannot be used


@dataclass
class RunEntry:
    """One stored run as ``loadproof runs`` shows it; the JSON keys are these fields."""

    run_id: str
    label: str | None
    status: str
    target: str | None
    profile: str | None
    plan: dict[str, Any] | None
    stages_completed: int | None
    requests: int | None
    started_at: str | None
    path: str
    problem: str | None = None
    stages_total: int | None = None  # shown in the table as completed/total; not in JSON
    sort_key: str = ""  # started_at, or the folder's modification time; not in JSON

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["stages_total"], data["sort_key"]
        return data


def _mtime_iso(path: Path) -> str:
    try:
        moment = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    except OSError:  # removed while we listed (a failed import cleans up after itself)
        return ""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _problem_entry(folder: Path, problem: str, manifest: dict[str, Any] | None = None) -> RunEntry:
    manifest = manifest or {}
    label = manifest.get("label")
    return RunEntry(run_id=str(manifest.get("run_id") or folder.name),
                    label=label if isinstance(label, str) else None, status=CORRUPT,
                    target=None, profile=None, plan=None, stages_completed=None, requests=None,
                    started_at=None, path=str(folder), problem=problem,
                    sort_key=_mtime_iso(folder))


def _profile_name(profile: Any) -> str | None:
    if isinstance(profile, dict):
        name = profile.get("name")
        return str(name) if name is not None else None
    return str(profile) if profile else None


def _stages_total(plan: Any, stages: list[Any]) -> int:
    if isinstance(plan, dict) and isinstance(plan.get("levels"), list):
        repeat = plan.get("repeat")
        return len(plan["levels"]) * (repeat if isinstance(repeat, int) and repeat > 1 else 1)
    return len(stages)


def read_entry(folder: Path) -> RunEntry:
    """The listing line of one run folder; never raises for a broken run."""
    from .store import FORMAT_VERSION

    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return _problem_entry(folder, "no manifest.json: a half-written run, or not a run folder")
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _problem_entry(folder, f"manifest.json is not valid JSON (half-written or "
                                      f"corrupt?): {exc}")
    except OSError as exc:
        return _problem_entry(folder, f"manifest.json cannot be read: {exc}")
    if not isinstance(manifest, dict):
        return _problem_entry(folder, "manifest.json is not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        return _problem_entry(folder, f"manifest.json lacks {', '.join(map(repr, missing))} "
                                      "(not a loadproof run?)", manifest)
    stages = manifest["stages"] if isinstance(manifest["stages"], list) else []
    stages = [s for s in stages if isinstance(s, dict)]
    problems = []
    if not isinstance(manifest["format_version"], int) or manifest["format_version"] > \
            FORMAT_VERSION:
        problems.append(f"format version {manifest['format_version']!r} is newer than this "
                        f"loadproof reads ({FORMAT_VERSION})")
    status = str(manifest["status"])
    if status == "running":
        problems.append("still marked running: in progress, or its process was stopped before "
                        "it finished")
    for stage in stages:
        if stage.get("status") == "running" and status != "running":
            problems.append(f"stage {stage.get('dir')} is marked running in a finished run")
        if stage.get("status") == "complete":
            for key in ("requests_file", "summary_file"):
                rel = stage.get(key)
                if isinstance(rel, str) and rel and not (folder / rel).is_file():
                    problems.append(f"stage {stage.get('dir')}: {rel} is missing")
    counts = [s["requests"] for s in stages if isinstance(s.get("requests"), int)]
    started = manifest.get("started_at")
    plan = manifest.get("plan")
    target = manifest.get("target")
    return RunEntry(
        run_id=str(manifest["run_id"]), label=str(manifest["label"]), status=status,
        target=str(target) if target else None, profile=_profile_name(manifest.get("profile")),
        plan=plan if isinstance(plan, dict) else None,
        stages_completed=sum(1 for s in stages if s.get("status") == "complete"),
        requests=sum(counts) if counts else None,
        started_at=started if isinstance(started, str) else None, path=str(folder),
        problem="; ".join(problems) or None, stages_total=_stages_total(plan, stages),
        sort_key=started if isinstance(started, str) else _mtime_iso(folder))


def list_entries(runs_dir: Path) -> list[RunEntry]:
    """Every run folder under ``runs_dir``, newest first."""
    if not runs_dir.exists():
        raise RunStoreError(f"no run store at {runs_dir} (runs are stored there by 'loadproof "
                            "run' and 'loadproof import'; choose another with --out)",
                            path=runs_dir)
    if not runs_dir.is_dir():
        raise RunStoreError(f"{runs_dir} is not a folder; --out names the run store folder",
                            path=runs_dir)
    folders = [child for child in runs_dir.iterdir()
               if child.is_dir() and not child.name.startswith(".")]
    entries = [read_entry(folder) for folder in folders]
    return sorted(entries, key=lambda e: (e.sort_key, e.run_id), reverse=True)


def plan_text(plan: dict[str, Any] | None) -> str:
    """'vus 10,50,100; 8s each, 2s warm-up; 2 repeats' (parts only when they apply)."""
    if not plan:
        return "-"
    parts = [f"{plan.get('model', '?')} {','.join(str(v) for v in plan.get('levels') or [])}"]
    duration, warmup, repeat = plan.get("duration_s"), plan.get("warmup_s"), plan.get("repeat")
    if isinstance(duration, int | float):
        timing = f"{duration:g}s each"
        if isinstance(warmup, int | float) and warmup:
            timing += f", {warmup:g}s warm-up"
        parts.append(timing)
    if isinstance(repeat, int) and repeat > 1:
        parts.append(f"{repeat} repeats")
    return "; ".join(parts)


def _started_text(started: str | None) -> str:
    if not started:
        return "-"
    return started.split(".")[0].rstrip("Z").replace("T", " ") + "Z"


def entries_table(entries: list[RunEntry]) -> str:
    """A plain-text table, one line per run; a run's problem on the line under it."""
    header = ("RUN ID", "LABEL", "STATUS", "TARGET / PROFILE", "PLAN", "STAGES", "REQUESTS",
              "STARTED (UTC)")
    rows = []
    for e in entries:
        where = f"profile {e.profile}" if e.profile else (e.target or "-")
        if e.stages_completed is None:
            stages = "-"
        elif e.stages_total is not None:
            stages = f"{e.stages_completed}/{e.stages_total}"
        else:
            stages = str(e.stages_completed)
        rows.append((e.run_id, e.label or "-", e.status, where, plan_text(e.plan), stages,
                     f"{e.requests:,}" if e.requests is not None else "-",
                     _started_text(e.started_at)))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {5, 6}  # numbers align right

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    out = [line(header)]
    for entry, row in zip(entries, rows, strict=True):
        out.append(line(row))
        if entry.problem:
            out.append(f"    problem: {entry.problem}")
    return "\n".join(out)


def entries_json(entries: list[RunEntry]) -> str:
    return json.dumps([e.as_json() for e in entries], indent=2)
