"""Starting the service: in this process (``serve``) or as a child process (``ServiceProcess``)."""

from __future__ import annotations

import asyncio
import contextlib
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
    """Run until SIGINT/SIGTERM; print the URL once ready; stop embedded PostgreSQL on exit.

    With ``settings.processes`` above 1, that many service processes share the listening
    socket (each with its own pool, bulkhead and admission control, as behind gunicorn's
    pre-fork model) and this process supervises them; /metrics then adds up every process's
    counters and histograms (prometheus_client's multiprocess mode)."""
    url = database_url or settings.database_url or env_database_url()
    embedded: EmbeddedPostgres | None = None
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        url = embedded.start()
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        shown = f"[{host}]" if ":" in host else host
        address = f"http://{shown}:{sock.getsockname()[1]}"
        if settings.processes > 1:
            _supervise(settings, url, sock, address)
        else:
            _serve_socket(settings, url, sock, announce=address)
    finally:
        if embedded is not None:
            embedded.cleanup()


def _serve_socket(settings: Settings, url: str, sock: socket.socket, *, announce: str,
                  index: int = 0) -> None:
    """One service process on ``sock`` until SIGINT/SIGTERM; print ``announce`` once serving."""
    import uvicorn

    from .app import service_app

    config = uvicorn.Config(service_app(settings, url, process_index=index), log_level="warning",
                            access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                            backlog=4096)
    server = _Server(config)

    async def announcer() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.02)
        if server.started:
            print(announce, flush=True)

    async def main() -> None:
        task = asyncio.create_task(announcer())
        await server.serve(sockets=[sock])
        task.cancel()

    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # uvloop is optional on platforms without it
        runner = asyncio.Runner()
    with runner:
        runner.run(main())


_CHILD_ENV = "LP_ORCHESTRATOR_CHILD"


def _supervise(settings: Settings, url: str, sock: socket.socket, address: str) -> None:
    """Start ``settings.processes`` service processes on ``sock``; print ``address`` once all
    serve; stop them all on SIGINT/SIGTERM, or all of them when one exits on its own.

    The first process starts alone (it requeues tasks a crash left running, which must happen
    before any other process's workers claim tasks); the others start once it serves. Each
    process ends with this one (the kernel's parent-death signal), even when it is killed."""
    import json
    import shutil
    import tempfile

    sock.listen(4096)
    metrics_dir = tempfile.mkdtemp(prefix="orchestrator-metrics-")
    children: list[subprocess.Popen[str]] = []
    stopping = threading.Event()
    crashed = False
    previous = {sig: signal.signal(sig, lambda *_: stopping.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    child_settings = settings.model_copy(update={"processes": 1}).model_dump_json()

    def start(index: int) -> subprocess.Popen[str]:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
        env[_CHILD_ENV] = json.dumps({"settings": child_settings, "url": url,
                                      "fd": sock.fileno(), "index": index,
                                      "parent": os.getpid()})
        child = subprocess.Popen(
            [sys.executable, "-c", "from loadproof.orchestrator.server import child_main; "
             "child_main()"], stdout=subprocess.PIPE, text=True, env=env,
            pass_fds=(sock.fileno(),))
        children.append(child)
        return child

    def wait_serving(batch: list[subprocess.Popen[str]], timeout_s: float = 60.0) -> bool:
        """True once every process of ``batch`` printed its line; False on a stop request."""
        import selectors

        waiting = {c.stdout.fileno(): c for c in batch if c.stdout is not None}
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            for fd in waiting:
                selector.register(fd, selectors.EVENT_READ)
            while waiting:
                if stopping.is_set():
                    return False
                if time.monotonic() > deadline:
                    raise ServiceStartError(f"a service process did not serve within "
                                            f"{timeout_s:.0f} s")
                for key, _ in selector.select(0.2):
                    child = waiting.pop(key.fd)
                    selector.unregister(key.fd)
                    assert child.stdout is not None
                    if not child.stdout.readline():
                        raise ServiceStartError(f"a service process exited while starting "
                                                f"(exit code {child.wait()})")
        return True

    try:
        if (wait_serving([start(0)])
                and wait_serving([start(i) for i in range(1, settings.processes)])):
            print(address, flush=True)
            while not stopping.wait(0.2):
                exited = [c for c in children if c.poll() is not None]
                if exited:
                    print(f"service process {exited[0].pid} exited with code "
                          f"{exited[0].returncode}; stopping the others", file=sys.stderr,
                          flush=True)
                    crashed = True
                    break
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 8.0  # one budget for all: uvicorn's grace is 5 s
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
            if child.stdout is not None:
                child.stdout.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if crashed:
        sys.exit(1)  # the service did not stop on request: its supervisor fails too


def _end_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM to this process when its parent dies (Linux), and leave
    Ctrl-C to the parent, which stops every process in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # uvicorn installs its own once serving
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the signal was armed
        sys.exit(1)


def child_main() -> None:
    """Entry of a service process started by :func:`_supervise`."""
    import json

    spec = json.loads(os.environ.pop(_CHILD_ENV))
    _end_with_parent(spec["parent"])
    settings = Settings.model_validate_json(spec["settings"])
    sock = socket.socket(fileno=spec["fd"])
    _serve_socket(settings, spec["url"], sock, announce="serving", index=spec["index"])


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
            # anything it left in its session (a service process of its own) goes too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
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
