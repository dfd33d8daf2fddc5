"""The run store: one folder per run, written atomically, never overwritten.

    data/runs/<run_id>/
      manifest.json                  the run: plan, target, script, k6, host, stage statuses
      service.log                    the reference service's log, when the runner started it
      stages/<r>-<stage>/            one folder per stage and repeat, e.g. r1-s2-50vus
        summary.json                 k6's end-of-test summary (handleSummary data)
        requests.parquet             one row per HTTP request (see ingest.REQUEST_COLUMNS)
        k6.log                       what k6 printed
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunStoreError
from .plan import StagePlan

FORMAT_VERSION = 1
DEFAULT_RUNS_DIR = Path("data/runs")
RUN_STATUSES = ("running", "complete", "incomplete", "failed")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
FILE_MODE = 0o644  # every stored file, whichever way it was written


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600; stored files are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
                       .encode())


def read_json(path: Path, *, what: str = "file") -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunStoreError(f"{what} not found: {path}", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunStoreError(f"{what} {path} is not valid JSON (half-written or corrupt?): {exc}",
                            path=path) from exc


def slug(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return cleaned[:40] or "run"


def create_run_dir(runs_dir: Path, label: str) -> tuple[str, Path]:
    """A new, unique run folder; ``mkdir`` without exist_ok makes collisions impossible."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        run_id = f"{utcnow():%Y%m%dT%H%M%SZ}-{slug(label)}-{secrets.token_hex(3)}"
        path = runs_dir / run_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return run_id, path
    raise RunStoreError(f"could not create a unique run folder under {runs_dir}", path=runs_dir)


def git_commit(root: Path = PROJECT_ROOT) -> dict[str, Any] | None:
    """The project's commit and whether the tree had changes, when it is a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False)
        return {"id": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_info() -> dict[str, Any]:
    return {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "node": platform.node(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }


@dataclass
class Run:
    """A stored run: its folder and manifest. Stage files are read on demand."""

    path: Path
    manifest: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.manifest["run_id"])

    @property
    def label(self) -> str:
        return str(self.manifest["label"])

    @property
    def status(self) -> str:
        return str(self.manifest["status"])

    @property
    def plan(self) -> StagePlan | None:
        data = self.manifest.get("plan")
        return StagePlan.from_dict(data) if data else None

    @property
    def stages(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("stages", []))

    def stage_dir(self, stage_record: dict[str, Any]) -> Path:
        return self.path / "stages" / stage_record["dir"]

    def usable_stages(self) -> list[dict[str, Any]]:
        """Stages whose data files exist: complete ones, and incomplete ones with data."""
        return [s for s in self.stages if s.get("requests_file")
                and (self.path / s["requests_file"]).is_file()]

    def requests_files(self) -> list[Path]:
        return [self.path / s["requests_file"] for s in self.usable_stages()]

    def save(self) -> None:
        atomic_write_json(self.path / "manifest.json", self.manifest)

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, label={self.label!r}, status={self.status!r})"


def resolve_run_path(ref: str | Path, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    """A run folder path, or a run id looked up under ``runs_dir``."""
    path = Path(ref)
    if path.is_dir():
        return path
    if path.name == "manifest.json" and path.is_file():
        return path.parent
    candidate = runs_dir / str(ref)
    if candidate.is_dir():
        return candidate
    raise RunStoreError(f"run not found: {ref} (neither a folder nor a run id under {runs_dir})",
                        path=path)


def load_run(ref: str | Path, runs_dir: Path = DEFAULT_RUNS_DIR) -> Run:
    """Open a stored run, checking its manifest and that every stage it lists has its files."""
    path = resolve_run_path(ref, runs_dir)
    manifest_path = path / "manifest.json"
    manifest = read_json(manifest_path, what="run manifest")
    if not isinstance(manifest, dict):
        raise RunStoreError(f"{manifest_path}: expected a JSON object", path=manifest_path)
    for key in ("format_version", "run_id", "label", "status", "stages"):
        if key not in manifest:
            raise RunStoreError(f"{manifest_path}: missing key {key!r} (not a loadproof run?)",
                                path=manifest_path)
    if manifest["format_version"] > FORMAT_VERSION:
        raise RunStoreError(f"{manifest_path}: format version {manifest['format_version']} is "
                            f"newer than this loadproof reads ({FORMAT_VERSION}); upgrade loadproof",
                            path=manifest_path)
    run = Run(path, manifest)
    for stage in run.stages:
        if stage.get("status") == "complete":
            for key in ("requests_file", "summary_file"):
                rel = stage.get(key)
                if rel and not (path / rel).is_file():
                    raise RunStoreError(f"run {run.run_id}: stage {stage['dir']} lists {rel} but "
                                        f"{path / rel} is missing", path=path / rel)
    return run


def list_runs(runs_dir: Path = DEFAULT_RUNS_DIR) -> list[Run]:
    runs = []
    if runs_dir.is_dir():
        for child in sorted(runs_dir.iterdir()):
            if (child / "manifest.json").is_file():
                try:
                    runs.append(load_run(child))
                except RunStoreError:
                    continue
    return runs
