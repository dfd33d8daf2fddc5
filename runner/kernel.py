"""The project's Jupyter kernel: ipykernel, started through this launcher.

ipykernel warns at every start of a kernel whose sockets are plain TCP ("Kernel is running
over TCP without encryption ... susceptible to eavesdropping"). Started by JupyterLab or by
``loadproof report``, kernels get CurveZMQ keys and the warning never fires; a bare
``papermill`` command gives none, and on a kernel bound to the loopback interface the warning
reads like a fault in the run while nothing is wrong: only this machine can reach those
sockets, as with every Jupyter kernel before encryption existed. So this launcher drops that
one message when the connection file binds TCP to a loopback address, and only then; a kernel
bound to any other interface still warns, and every other message passes.

``python -m loadproof.kernel install`` registers the kernelspec (``make install`` runs it):
ipykernel's own, with this module in place of ``ipykernel_launcher``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

NOTICE = "Kernel is running over TCP without encryption"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class LoopbackNoticeFilter(logging.Filter):
    """Drops ipykernel's plain-TCP notice; installed only for a loopback-bound kernel."""

    def filter(self, record: logging.LogRecord) -> bool:
        return NOTICE not in record.getMessage()


def connection_file(argv: list[str]) -> Path | None:
    for flag in ("-f", "--f", "--IPKernelApp.connection_file"):
        for i, arg in enumerate(argv):
            if arg == flag and i + 1 < len(argv):
                return Path(argv[i + 1])
            if arg.startswith(flag + "="):
                return Path(arg.split("=", 1)[1])
    return None


def loopback_plain_tcp(connection: dict[str, Any]) -> bool:
    """True when the kernel's sockets are plain TCP on a loopback address."""
    return (connection.get("transport", "tcp") == "tcp"
            and str(connection.get("ip", "")) in LOOPBACK
            and not connection.get("curve_secretkey"))


def _quiet_if_loopback(argv: list[str]) -> None:
    path = connection_file(argv)
    try:
        connection = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return  # ipykernel reports an unreadable connection file itself
    if loopback_plain_tcp(connection):
        logging.getLogger("IPKernelApp").addFilter(LoopbackNoticeFilter())


def install(prefix: str | None = None) -> Path:
    """Register the ``python3`` kernelspec in ``prefix`` (default: this environment) with this
    launcher; keeps ipykernel's metadata (its declared CurveZMQ support included)."""
    from ipykernel.kernelspec import install as ipykernel_install

    where = Path(ipykernel_install(prefix=prefix or sys.prefix, kernel_name="python3"))
    spec_file = where / "kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["argv"] = ["loadproof.kernel" if arg == "ipykernel_launcher" else arg for arg in spec["argv"]]
    spec_file.write_text(json.dumps(spec, indent=1) + "\n")
    return where


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["install"]:
        print(f"kernelspec python3 installed in {install()}")
        return
    # as ipykernel_launcher does: the current folder must not shadow the kernel's imports
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]
    _quiet_if_loopback(args)
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
