"""PostgreSQL access: the embedded server (pgserver), engines with the profile's pool, the schema."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .settings import Settings

log = logging.getLogger(__name__)
# pgserver warns when its own stop finds the server already stopped by ours.
logging.getLogger("pgserver").setLevel(logging.CRITICAL)

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS personas (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        system_prompt TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS tasks (
        id UUID PRIMARY KEY,
        persona_id TEXT NOT NULL,
        task_type TEXT NOT NULL,
        payload JSONB,
        status TEXT NOT NULL DEFAULT 'queued',
        error TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ)""",
    "CREATE INDEX IF NOT EXISTS tasks_queued ON tasks (created_at) WHERE status = 'queued'",
    "CREATE INDEX IF NOT EXISTS tasks_persona ON tasks (persona_id, created_at DESC)",
    """CREATE TABLE IF NOT EXISTS task_results (
        task_id UUID PRIMARY KEY REFERENCES tasks(id),
        output TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
]

# A small fixed set of agent personas so the workers have a real lookup to do.
PERSONAS = [(f"persona-{i}", f"Agent {i}", f"You are agent number {i}.") for i in range(1, 51)]


class EmbeddedPostgres:
    """A real PostgreSQL server from the pgserver wheel, started and stopped by us."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="loadproof-pg-"))
        self._server: Any = None

    def start(self) -> str:
        """Start (or reuse) the server; return an asyncpg SQLAlchemy URL over its unix socket."""
        import warnings

        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver  # imported lazily: only the embedded mode needs it

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        return self.url

    @property
    def url(self) -> str:
        uri = self._server.get_uri()  # postgresql://postgres:@/postgres?host=/socket/dir
        return uri.replace("postgresql://", "postgresql+asyncpg://", 1)

    def stop(self) -> None:
        """Stop the server process (fast shutdown); data stays until :meth:`cleanup`."""
        import pgserver

        pg_ctl = pgserver.pg_ctl  # type: ignore[attr-defined]  # generated at import time
        if self._server is None:
            return
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=self._server.system_user)
        except subprocess.CalledProcessError:
            # pg_ctl gave up (a busy machine: clients slow to let go within its wait); the
            # server is stopped for certain, immediately, unless it went meanwhile
            if self._postmaster_running():
                pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.data_dir,
                       user=self._server.system_user)

    def restart(self) -> None:
        """Start a stopped server again on the same data folder and socket."""
        with self._server._lock:
            self._server.ensure_postgres_running()

    def _postmaster_running(self) -> bool:
        import psutil

        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return False
        return psutil.pid_exists(pid)

    def cleanup(self) -> None:
        """Stop the server for certain, then drop our handle (and the folder if we made it)."""
        if self._server is not None:
            try:
                info = self._server.get_postmaster_info()
                # a server restarted under us (a db-outage fault) runs with a new pid: stop
                # whatever postmaster runs on our data folder now
                if info.process.is_running() or self._postmaster_running():
                    self.stop()
                # stopped by us: keep pgserver's own exit hook from stopping it a second time
                self._server._postmaster_info = None
            except Exception:  # already stopped, or stopped by someone else
                pass
            try:
                self._server.cleanup()
            finally:
                self._server = None
        if self._owns_dir:
            import shutil

            shutil.rmtree(self.data_dir, ignore_errors=True)


def normalize_url(url: str) -> str:
    """Accept postgres:// and postgresql:// URLs and use the asyncpg driver."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    return url


def make_engine(url: str, settings: Settings, *, pool_size: int | None = None,
                max_overflow: int | None = None) -> AsyncEngine:
    """An async engine with the profile's pool; the per-statement timeout follows the request one."""
    server_settings = {"application_name": "orchestrator"}
    if settings.request_timeout_s > 0:
        server_settings["statement_timeout"] = str(int(settings.request_timeout_s * 1000))
    windowed_ping = settings.pool_pre_ping and settings.pool_pre_ping_window_s > 0
    engine = create_async_engine(
        normalize_url(url),
        pool_size=pool_size if pool_size is not None else settings.pool_size,
        max_overflow=max_overflow if max_overflow is not None else settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        pool_recycle=settings.pool_recycle_s,
        pool_pre_ping=settings.pool_pre_ping and not windowed_ping,
        connect_args={"server_settings": server_settings, "timeout": 5},
        # The API runs single statements, each its own transaction; autocommit also makes
        # the pre-ping one round trip instead of BEGIN / ping / ROLLBACK. Workers ask for
        # a real transaction through worker_view().
        isolation_level="AUTOCOMMIT",
    )
    if windowed_ping:
        install_windowed_ping(engine, settings.pool_pre_ping_window_s)
    return engine


def install_windowed_ping(engine: AsyncEngine, window_s: float) -> None:
    """Pre-ping a connection on checkout only when it sat idle longer than ``window_s``: a
    connection used a moment ago is as alive as a ping would show, and the ping is a round
    trip on every request. A failed ping makes the pool replace the connection."""
    import time

    from sqlalchemy import event, exc

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def remember(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        last = record.info.get("checked_in_at")
        if last is not None and time.monotonic() - last < window_s:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:
            raise exc.DisconnectionError(f"pre-ping failed: {error}") from error


def worker_view(engine: AsyncEngine) -> AsyncEngine:
    """The same pool with transactions, for the workers' claim-and-finish batches."""
    return engine.execution_options(isolation_level="READ COMMITTED")


async def create_schema(engine: AsyncEngine, *, requeue: bool = True) -> None:
    """Create tables idempotently, seed personas, and (``requeue``) requeue tasks a crash left
    running."""
    async with engine.begin() as conn:
        # Serialize concurrent starts against one database.
        await conn.execute(text("SELECT pg_advisory_xact_lock(724011)"))
        for statement in SCHEMA:
            await conn.execute(text(statement))
        await conn.execute(
            text("INSERT INTO personas (id, name, system_prompt) VALUES (:id, :name, :prompt) "
                 "ON CONFLICT (id) DO NOTHING"),
            [{"id": i, "name": n, "prompt": p} for i, n, p in PERSONAS],
        )
        if requeue:
            await conn.execute(
                text("UPDATE tasks SET status = 'queued' WHERE status = 'running'"))


def pool_figures(engine: AsyncEngine) -> dict[str, int]:
    pool: Any = engine.pool
    return {
        "size": pool.size(),
        "checked_out": pool.checkedout(),
        "overflow": max(pool.overflow(), 0),
        "checked_in": pool.checkedin(),
    }


def env_database_url() -> str | None:
    return os.environ.get("DATABASE_URL") or None
