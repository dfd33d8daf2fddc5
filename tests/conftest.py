"""Shared fixtures: real k6, a real embedded PostgreSQL, real servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from loadproof.orchestrator.db import EmbeddedPostgres

DATA = Path(__file__).parent / "data"
PROJECT = Path(__file__).parent.parent
SAMPLE = PROJECT / "data" / "sample"


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[EmbeddedPostgres]:
    """A real PostgreSQL server (pgserver), for the tests that stop and restart it."""
    pg = EmbeddedPostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path
