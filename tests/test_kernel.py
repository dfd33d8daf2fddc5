"""The project's kernel launcher drops ipykernel's plain-TCP notice only for a kernel bound to
loopback; anything else it passes on."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from loadproof.kernel import NOTICE, LoopbackNoticeFilter, connection_file, loopback_plain_tcp


@pytest.mark.parametrize(("connection", "quiet"), [
    ({"transport": "tcp", "ip": "127.0.0.1"}, True),
    ({"transport": "tcp", "ip": "::1"}, True),
    ({"transport": "tcp", "ip": "0.0.0.0"}, False),  # reachable from other machines: warn
    ({"transport": "tcp", "ip": "10.1.2.3"}, False),
    ({"transport": "ipc", "ip": "kernel-ipc"}, False),  # ipykernel says nothing there anyway
])
def test_only_a_loopback_tcp_kernel_is_quiet(connection: dict[str, str], quiet: bool) -> None:
    assert loopback_plain_tcp(connection) is quiet


def test_the_filter_drops_that_notice_and_nothing_else() -> None:
    keep = LoopbackNoticeFilter()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("IPKernelApp", logging.WARNING, __file__, 1, message, None, None)

    assert not keep.filter(record(NOTICE + ". All communication ..."))
    assert keep.filter(record("Failed to load connection file"))


def test_the_connection_file_is_found_in_the_kernel_arguments(tmp_path: Path) -> None:
    path = tmp_path / "kernel-1.json"
    path.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1"}))
    assert connection_file(["-f", str(path)]) == path
    assert connection_file([f"--IPKernelApp.connection_file={path}"]) == path
    assert connection_file(["--debug"]) is None


def test_the_registered_kernel_starts_through_this_launcher() -> None:
    spec = json.loads((Path(sys.prefix) / "share/jupyter/kernels/python3/kernel.json").read_text())
    assert spec["argv"][spec["argv"].index("-m") + 1] == "loadproof.kernel"
    assert "curve" in spec["metadata"]["supported_encryption"]  # Lab still encrypts
