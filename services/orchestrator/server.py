"""Starting the service: in this process (``serve``) or as a child process (``ServiceProcess``)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from .db import EmbeddedPostgres, env_database_url
from .settings import Settings


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080,
          database_url: str | None = None) -> None:
    """Run until SIGINT/SIGTERM; print the URL once ready; stop embedded PostgreSQL on exit."""
    import uvicorn

    from .app import create_app

    url = database_url or settings.database_url or env_database_url()
    embedded: EmbeddedPostgres | None = None
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        url = embedded.start()
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        bound_port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(settings, url), log_level="warning",
                                access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                                backlog=4096)
        server = _Server(config)

        async def announce() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.02)
            if server.started:
                shown = f"[{host}]" if ":" in host else host
                print(f"http://{shown}:{bound_port}", flush=True)

        async def main() -> None:
            announcer = asyncio.create_task(announce())
            await server.serve(sockets=[sock])
            announcer.cancel()

        try:
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:  # uvloop is optional on platforms without it
            runner = asyncio.Runner()
        with runner:
            runner.run(main())
    finally:
        if embedded is not None:
            embedded.cleanup()


class _Server:
    """uvicorn's server without its re-raise of the caught signal, so our cleanup runs."""

    def __new__(cls, config: Any) -> Any:
        import contextlib

        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Any:
                previous = {sig: signal.signal(sig, self.handle_exit)
                            for sig in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

        return Server(config)


class ServiceStartError(RuntimeError):
    """The service process did not come up; the message carries its last log lines."""


class ServiceProcess:
    """The reference service in a child process on a free loopback port.

    ``with ServiceProcess("optimized") as svc: svc.url`` — stops it (and its embedded
    PostgreSQL) on exit.
    """

    def __init__(self, profile: str = "baseline", *, host: str = "127.0.0.1",
                 database_url: str | None = None, log_path: Path | None = None,
                 overrides: dict[str, Any] | None = None, start_timeout_s: float = 60.0) -> None:
        self.profile = profile
        self.host = host
        self.database_url = database_url
        self.log_path = log_path
        self.overrides = overrides or {}
        self.start_timeout_s = start_timeout_s
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._log: Any = None
        self._reader: threading.Thread | None = None
        # a backend of its database (from the readiness check), when it answered
        self.database_backend_pid: int | None = None

    def start(self) -> ServiceProcess:
        cmd = [sys.executable, "-m", "loadproof.orchestrator", "--profile", self.profile,
               "--host", self.host, "--port", "0"]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        for key, value in self.overrides.items():
            cmd += ["--set", f"{key}={value}"]
        log = open(self.log_path, "a") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._log = log if self.log_path else None
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                                     start_new_session=True)
        ready = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self._lines.append(line.rstrip())
                if line.startswith("http"):
                    self.url = line.strip()
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(self.start_timeout_s) or not self.url:
            self.stop()
            raise ServiceStartError(
                f"reference service (profile {self.profile}) did not start within "
                f"{self.start_timeout_s:.0f} s; see {self.log_path or 'its stderr'}")
        readiness = self.wait_ready()
        database = (readiness.get("components") or {}).get("database") or {}
        self.database_backend_pid = database.get("backend_pid")
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                resp = httpx.get(f"{self.url}/health/ready", timeout=2.0)
                if resp.status_code == 200:
                    body: dict[str, Any] = resp.json()
                    return body
                last = resp.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ServiceStartError(f"{self.url}/health/ready not ready after {timeout_s} s: {last}")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            return proc.returncode
        finally:
            if self._reader is not None:
                self._reader.join(5)
            if proc.stdout is not None:
                proc.stdout.close()
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
