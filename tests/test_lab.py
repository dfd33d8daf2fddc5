"""Interactive exploration: ``make lab`` serves notebooks/ in JupyterLab on loopback with a token
and the project's kernel; kernels start encrypted (no "over TCP without encryption" notice), in
Lab and under papermill; the compare/report notebooks list the stored runs to choose from."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from loadproof import notebook as nb
from loadproof.listing import list_entries
from loadproof.report import execute_notebook, export_html

from .conftest import SAMPLE

REPO = Path(__file__).resolve().parent.parent
NOTICE = "without encryption"
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]+)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _store(tmp_path: Path) -> Path:
    store = tmp_path / "runs"
    store.mkdir()
    for name in ("baseline", "optimized"):
        shutil.copytree(SAMPLE / name, store / name)
    return store


class _Lab:
    """``make lab`` in its own process group, its output collected line by line."""

    def __init__(self, tmp_path: Path) -> None:
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
                   JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
        self.proc = subprocess.Popen(["make", "-s", "lab", f"LAB_PORT={_free_port()}"], cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def url(self, timeout: float) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = URL.search(self.output)
            if found:
                return int(found.group(1)), found.group(2)
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no Lab URL with a token within {timeout:.0f}s:\n{self.output}")

    def stop(self) -> None:
        """SIGTERM to the group (Jupyter shuts its kernels down), SIGKILL if it lingers."""
        with_children: list[psutil.Process] = []
        with contextlib.suppress(psutil.NoSuchProcess):
            with_children = psutil.Process(self.proc.pid).children(recursive=True)
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        _, alive = psutil.wait_procs(with_children, timeout=10)
        for proc in alive:  # a kernel in its own session: still ours to end
            proc.kill()
        assert not alive, f"left running after the Lab stopped: {alive}"


def _api(port: int, token: str | None, path: str, method: str = "GET",
         body: dict[str, Any] | None = None) -> Any:
    headers = {"Authorization": f"token {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


def _execute_over_websocket(port: int, token: str, kernel_id: str, code: str) -> str:
    """Run code in a Lab kernel the way the browser does (the kernel's websocket channel)."""
    import websocket  # websocket-client, a dependency of jupyter_server

    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?token={token}", timeout=60)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False}}))
        printed = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = json.loads(ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                printed.append(message["content"]["text"])
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return "".join(printed)
        raise AssertionError("the kernel did not finish executing within 60s")
    finally:
        ws.close()


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Lab, int, str]]:
    """ONE ``make lab`` for this module's Lab tests (starting JupyterLab is their fixed cost):
    the Lab, its port and token. Stopping it checks that nothing it started is left running."""
    lab = _Lab(tmp_path_factory.mktemp("lab"))
    try:
        port, token = lab.url(timeout=120)
        yield lab, port, token
    finally:
        lab.stop()


@pytest.mark.slow
def test_make_lab_serves_the_notebooks_on_loopback_with_quiet_encrypted_kernels(
        lab_server: tuple[_Lab, int, str]) -> None:
    """Loopback only, a token required, notebooks/ and the project's kernel by default, and a
    kernel started in the Lab runs code with no "without encryption" notice."""
    lab, port, token = lab_server
    status = _api(port, token, "/api/status")
    assert "started" in status
    with pytest.raises(urllib.error.HTTPError) as refused:
        _api(port, None, "/api/contents")
    assert refused.value.code == 403
    # loopback only: nothing in the tree listens anywhere else
    server = psutil.Process(lab.proc.pid)
    listening = [c.laddr for p in [server, *server.children(recursive=True)]
                 for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    # notebooks/ is what it opens; the project's kernel is the default
    names = {item["name"] for item in _api(port, token, "/api/contents")["content"]}
    assert {"load_test.ipynb", "compare.ipynb", "report.ipynb"} <= names
    specs = _api(port, token, "/api/kernelspecs")
    argv = specs["kernelspecs"][specs["default"]]["spec"]["argv"]
    assert Path(argv[0]).parent == Path(sys.prefix) / "bin"
    # a kernel starts, runs code through the browser's channel, and says nothing alarming
    kernel = _api(port, token, "/api/kernels", "POST", {"name": "python3"})
    assert _execute_over_websocket(port, token, kernel["id"], "print(6 * 7)") == "42\n"
    _api(port, token, f"/api/kernels/{kernel['id']}", "DELETE")
    assert NOTICE not in lab.output, lab.output


def _run_notebook_in_lab(port: int, token: str, name: str) -> list[dict[str, Any]]:
    """Every code cell of notebooks/<name>.ipynb, with its shipped defaults, in a new kernel of
    the running Lab (through the browser's websocket channel); the outputs it sent."""
    import websocket

    kernel = _api(port, token, "/api/kernels", "POST", {"name": "python3"})
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/api/kernels/{kernel['id']}/channels?token={token}", timeout=120)
    outputs: list[dict[str, Any]] = []
    try:
        book = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        for cell in (c for c in book.cells if c.cell_type == "code"):
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                           "session": uuid.uuid4().hex, "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell",
                "content": {"code": cell.source, "silent": False, "store_history": True,
                            "user_expressions": {}, "allow_stdin": False}}))
            deadline = time.monotonic() + 180
            while True:
                assert time.monotonic() < deadline, f"{name}: a cell ran over 180 s"
                message = json.loads(ws.recv())
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = message["msg_type"]
                if kind == "error":
                    raise AssertionError(f"{name}: {message['content']['ename']}: "
                                         f"{message['content']['evalue']}\n{cell.source}")
                if kind in ("display_data", "execute_result", "stream"):
                    outputs.append({"type": kind, **message["content"]})
                if kind == "status" and message["content"]["execution_state"] == "idle":
                    break
    finally:
        ws.close()
        _api(port, token, f"/api/kernels/{kernel['id']}", "DELETE")
    return outputs


def _figures(outputs: list[dict[str, Any]]) -> int:
    """Charts shown: an image output, or the report's captioned SVG <figure> in HTML."""
    return sum(1 for o in outputs if {"image/png", "image/svg+xml"} & set(o.get("data", {}))
               or "<figure><picture>" in o.get("data", {}).get("text/html", ""))


def _shown(outputs: list[dict[str, Any]]) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/html", "")
                   + o.get("data", {}).get("text/plain", "") for o in outputs)


@pytest.mark.slow
def test_each_notebook_runs_in_the_lab_with_its_defaults_and_shows_the_samples_figures(
        lab_server: tuple[_Lab, int, str]) -> None:
    """Every notebook, cell by cell with its shipped defaults, in new kernels of the module's
    running Lab, shows the sample comparison's figures; no "without encryption" notice."""
    from loadproof.compare import compare_runs
    from loadproof.store import load_run

    sample = {name: load_run(SAMPLE / name) for name in ("baseline", "optimized")}
    comparison = compare_runs(sample["baseline"], sample["optimized"])
    top = comparison.stages[-1]
    p95 = top.metrics["latency_p95_ms"]
    assert p95.baseline is not None and p95.candidate is not None
    lab, port, token = lab_server
    arm = _run_notebook_in_lab(port, token, "load_test")
    assert _figures(arm) >= 3  # latency, throughput and outcomes against load
    shown = _shown(arm)
    assert sample["baseline"].run_id in shown and top.key in shown
    for name in ("compare", "report"):
        outputs = _run_notebook_in_lab(port, token, name)
        assert _figures(outputs) >= (2 if name == "compare" else 4), name
        shown = _shown(outputs)
        # the sample comparison's own figures, as the notebook printed them
        assert f"{p95.baseline:.1f}" in shown and f"{p95.candidate:.1f}" in shown, name
    assert NOTICE not in lab.output, lab.output


@pytest.mark.slow  # a papermill kernel: about 20 s on a busy machine
def test_papermill_kernels_start_encrypted_and_compare_lists_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path)
    out = tmp_path / "compare.ipynb"
    execute_notebook("compare", out, {"runs_dir": str(store)})
    # the kernel's stderr is kept beside the notebook when it logged anything at all
    assert not out.with_suffix(".kernel.log").exists(), out.with_suffix(".kernel.log").read_text()
    listing = next(c for c in nbformat.read(out, as_version=4).cells if "stored_runs" in c.source)
    shown = "".join(o.get("data", {}).get("text/html", "") for o in listing.outputs)
    assert "Stored runs in" in shown and str(store) in shown
    for entry in list_entries(store):
        assert entry.run_id in shown


def test_runs_table_is_the_cli_listing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (store / "half-written").mkdir()
    frame = nb.runs_table(store)
    entries = list_entries(store)
    assert list(frame["run id"]) == [e.run_id for e in entries]
    broken = frame[frame["run id"] == "half-written"].iloc[0]
    assert broken["status"] == "corrupt" and "no manifest.json" in broken["problem"]
    complete = frame[frame["status"] == "complete"]
    assert len(complete) == 2 and all(s.split("/")[0] == s.split("/")[1] for s in complete["stages"])
    cli = subprocess.run([str(Path(sys.prefix) / "bin" / "loadproof"), "runs", "--out", str(store)],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    for run_id, stages in zip(frame["run id"], frame["stages"], strict=True):
        line = next(line for line in cli.stdout.splitlines() if line.startswith(run_id))
        assert f" {stages} " in line


def test_stored_runs_says_when_there_is_nothing_to_list(tmp_path: Path) -> None:
    missing = nb.stored_runs(tmp_path / "nowhere").data
    assert "No stored runs to list" in missing and "nowhere" in missing
    (tmp_path / "empty").mkdir()
    assert "holds no runs yet" in nb.stored_runs(tmp_path / "empty").data


def test_a_relative_store_means_the_project_one_from_notebooks(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO / "notebooks")  # where JupyterLab starts a notebook's kernel
    assert nb.runs_path("data/sample") == REPO / "data" / "sample"
    assert nb.open_run("baseline", "data/sample").path == (REPO / "data/sample/baseline").resolve()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "sample").mkdir(parents=True)
    assert nb.runs_path("data/sample") == Path("data/sample")


def test_cells_tagged_explore_stay_out_of_the_exported_report(tmp_path: Path) -> None:
    book = nbformat.v4.new_notebook()
    kept = nbformat.v4.new_code_cell("1")
    kept.outputs = [nbformat.v4.new_output("display_data", {"text/html": "<p>KEPT-OUTPUT</p>"})]
    dropped = nbformat.v4.new_code_cell("2", metadata={"tags": ["explore"]})
    dropped.outputs = [nbformat.v4.new_output("display_data", {"text/html": "<p>RUN-LIST</p>"})]
    book.cells = [kept, dropped]
    executed = tmp_path / "r.ipynb"
    nbformat.write(book, executed)
    body = export_html(executed, tmp_path / "r.html").read_text()
    assert "KEPT-OUTPUT" in body and "RUN-LIST" not in body
    shipped = nbformat.read(REPO / "notebooks" / "report.ipynb", as_version=4)
    listing = [c for c in shipped.cells if "stored_runs" in c.source]
    assert listing and all("explore" in c.metadata.get("tags", []) for c in listing)


@pytest.mark.slow
def test_run_now_shows_progress_in_the_cell_and_stops_on_the_interrupt_button(
        tmp_path: Path) -> None:
    """The Lab's interrupt button is jupyter_client's interrupt_kernel: SIGINT to the kernel's
    process group. The run stops as on Ctrl-C, and the cell shows what was kept."""
    from jupyter_client.manager import KernelManager
    from loadproof.report import kernel_manager_config
    from loadproof.store import load_run

    from .helpers import tiny_server

    store = tmp_path / "runs"
    km = KernelManager(kernel_name="python3", config=kernel_manager_config())
    with tiny_server() as url:
        km.start_kernel(cwd=str(REPO / "notebooks"))
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=120)
            msg_id = kc.execute(
                "from loadproof import notebook as nb\n"
                "from loadproof.plan import make_plan\n"
                "plan = make_plan('10,10,10,10', model='rate', stage_duration='3s')\n"
                f"run = nb.run_live(plan, label='stop', target={url!r}, script='quick', "
                f"out_dir={str(store)!r})\n")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                found = list(store.glob("*/manifest.json"))
                if found:
                    statuses = [s["status"] for s in json.loads(found[0].read_text())["stages"]]
                    if statuses[:1] == ["complete"] and len(statuses) == 2:
                        break
                time.sleep(0.2)
            else:
                raise AssertionError("the first stage did not finish within 120s")
            kernel_children = psutil.Process(km.provisioner.pid).children(recursive=True)
            km.interrupt_kernel()
            updates: list[str] = []
            reply = None
            while reply is None:
                message = kc.get_iopub_msg(timeout=120)
                if message["parent_header"].get("msg_id") != msg_id:
                    continue
                if message["msg_type"] in ("display_data", "update_display_data"):
                    updates.append(message["content"]["data"].get("text/html", ""))
                if message["msg_type"] == "error":
                    raise AssertionError("\n".join(message["content"]["traceback"]))
                if (message["msg_type"] == "status"
                        and message["content"]["execution_state"] == "idle"):
                    reply = kc.get_shell_msg(timeout=30)
            assert reply["content"]["status"] == "ok"
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    # drawn in place while it ran: the live status of a stage, then the kept run
    assert sum("req/s" in u for u in updates) >= 1, updates
    assert any("Interrupted." in u for u in updates)
    run = load_run(next(store.iterdir()))
    assert run.status == "incomplete"
    assert [s["status"] for s in run.stages][:2] == ["complete", "incomplete"]
    # k6 (in a session of its own) was stopped by the run, not left behind
    _, alive = psutil.wait_procs(kernel_children, timeout=10)
    assert not alive, alive
