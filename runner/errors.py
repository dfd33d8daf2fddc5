"""The one exception root of loadproof.

    LoadproofError                 anything the CLI reports as ``error: ...``
    ├── UsageError                 a flag, parameter or plan that makes no sense (exit 2)
    ├── K6NotFoundError            no usable k6 binary (exit 3)
    ├── TargetError                target unreachable or not HTTP; no load was sent (exit 4)
    ├── ServiceError               the reference service could not start (exit 4)
    ├── RunStoreError              a run folder or file is missing, half-written or invalid (exit 5)
    │   └── ImportFormatError      a file given to ``import`` is no k6 output we know (exit 5)
    ├── ExperimentError            a mistake in an experiment file; names the key (exit 2)
    ├── ComparisonError            two runs that cannot be compared (exit 6)
    ├── AchievementError           an achievement that fails its JSON Schema (exit 6)
    └── ReportError                a notebook failed; names the cell and keeps its copy (exit 7)
"""

from __future__ import annotations

from pathlib import Path


class LoadproofError(Exception):
    """Root of every error loadproof raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None

    def __str__(self) -> str:
        return self.message


class UsageError(LoadproofError):
    exit_code = 2


class ExperimentError(UsageError):
    def __init__(self, message: str, *, key: str | None = None,
                 path: Path | str | None = None) -> None:
        super().__init__(message, path=path)
        self.key = key


class K6NotFoundError(LoadproofError):
    exit_code = 3


class TargetError(LoadproofError):
    exit_code = 4

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class ServiceError(LoadproofError):
    exit_code = 4


class RunStoreError(LoadproofError):
    exit_code = 5


class ImportFormatError(RunStoreError):
    pass


class ComparisonError(LoadproofError):
    exit_code = 6


class AchievementError(LoadproofError):
    exit_code = 6


class ReportError(LoadproofError):
    exit_code = 7

    def __init__(self, message: str, *, path: Path | str | None = None,
                 cell: int | None = None) -> None:
        super().__init__(message, path=path)
        self.cell = cell
