"""The suite passes on a fresh machine: without optional system libraries, and with every
third-party warning we ignore named (the suite turns all other warnings into errors)."""

from __future__ import annotations

import ctypes.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PROJECT = Path(__file__).parent.parent
HIDE_LIBS_DIR = Path(__file__).parent / "hide_libs"
# Libraries WeasyPrint loads with allow_fail=True: optional on a fresh machine.
OPTIONAL_LIBS = "harfbuzz-subset,harfbuzz-vector"

HTML = """<!doctype html><html><head><meta charset="utf-8"><style>
body { font-family: sans-serif; } h1 { font-family: serif; } code { font-family: monospace; }
</style></head><body><h1>Report — p95 ×1.8</h1><p>Throughput at 400 ms: 1 234 req/s.</p>
<code>stage s2-50vus</code><svg width="40" height="20"><rect width="40" height="20"/></svg>
</body></html>"""


def _hidden_env(libs: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HIDE_LIBS_DIR),
                                                      env.get("PYTHONPATH")]))
    env["LOADPROOF_HIDE_LIBS"] = libs
    return env


def test_pdf_export_renders(tmp_path: Path) -> None:
    """Run alone under hidden libraries by the test below; also an ordinary test."""
    from loadproof.report import export_pdf

    html = tmp_path / "page.html"
    html.write_text(HTML, encoding="utf-8")
    out = export_pdf(html, tmp_path / "page.pdf")
    assert out.read_bytes().startswith(b"%PDF-")
    if "harfbuzz-subset" in os.environ.get("LOADPROOF_HIDE_LIBS", ""):
        from weasyprint.text import ffi

        assert ffi.harfbuzz_subset is None, "the library was meant to be hidden"


def test_pdf_export_without_optional_libraries() -> None:
    """The PDF export under the suite's own warning filters, in a fresh process that cannot
    load WeasyPrint's optional libraries, whether or not this machine has them."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{Path(__file__).relative_to(PROJECT)}::test_pdf_export_renders"],
        cwd=PROJECT, env=_hidden_env(OPTIONAL_LIBS), capture_output=True, text=True,
        timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout


def test_hide_libs_hides_a_present_library() -> None:
    """The hiding mechanism works: a library this machine has becomes unloadable."""
    name = ctypes.util.find_library("m") or "libm.so.6"
    code = ("import ctypes, sys\ntry:\n    ctypes.CDLL(sys.argv[1])\nexcept OSError:\n"
            "    print('hidden')\nelse:\n    print('loaded')\n"
            "import cffi\ntry:\n    cffi.FFI().dlopen(sys.argv[1])\nexcept OSError:\n"
            "    print('hidden')\nelse:\n    print('loaded')\n")
    shown = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True,
                           check=True, env=_hidden_env(""))
    hidden = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True,
                            check=True, env=_hidden_env("libm"))
    assert shown.stdout.split() == ["loaded", "loaded"]
    assert hidden.stdout.split() == ["hidden", "hidden"]


# ---------------------------------------------------------------------------------------
# the warning filters


def _filter_lines() -> list[tuple[str, str]]:
    """(entry, its comment) for each filterwarnings entry, read from pyproject.toml's text
    (tomllib drops comments). The comment is the one on the same line or the line above."""
    text = (PROJECT / "pyproject.toml").read_text()
    block = re.search(r"^filterwarnings = \[\n(.*?)^\]", text, re.S | re.M)
    assert block, "pyproject.toml has no multi-line filterwarnings list"
    entries: list[tuple[str, str]] = []
    previous_comment = ""
    for raw in block.group(1).splitlines():
        line = raw.strip()
        if line.startswith("#"):
            previous_comment = line.lstrip("#").strip()
            continue
        match = re.match(r'"([^"]*)",?\s*(?:#\s*(.*))?$', line)
        assert match, f"pyproject.toml filterwarnings: cannot read {raw!r}"
        entries.append((match.group(1), (match.group(2) or previous_comment).strip()))
        previous_comment = ""
    parsed = tomllib.loads(text)["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert [e for e, _ in entries] == parsed, "the text and the parsed TOML disagree"
    return entries


def _names_something(pattern: str) -> bool:
    """A regex with a literal run of at least 6 characters (not just wildcards)."""
    literal = re.sub(r"\\.|[.*+?^$()\[\]{}|]", "\0", pattern)
    return any(len(chunk.strip()) >= 6 for chunk in literal.split("\0"))


@pytest.mark.parametrize("entry", ["ignore", "ignore::DeprecationWarning",
                                   "ignore:.*:UserWarning:.*", "ignore:::"])
def test_the_filter_check_refuses_blanket_ignores(entry: str) -> None:
    assert _filter_problem(entry, "a comment") is not None


def _filter_problem(entry: str, comment: str) -> str | None:
    parts = entry.split(":")
    action = parts[0]
    if action == "error":
        return None
    if action != "ignore":
        return f"{entry!r}: only 'error' and named 'ignore' entries belong here"
    message, category, module = (parts + ["", "", ""])[1:4]
    if category and not re.fullmatch(r"[A-Za-z_.]*(Warning|Error)", category):
        return f"{entry!r}: {category!r} is not a warning category"
    named_module = bool(re.match(r"[A-Za-z_]\w*", module))
    if not (named_module or _names_something(message)):
        return f"{entry!r}: name the module or the message of the warning; never ignore a " \
               f"whole category"
    if not comment:
        return f"{entry!r}: say in a comment where the warning comes from and why it is safe"
    return None


def test_warnings_are_errors_and_every_ignore_is_named() -> None:
    entries = _filter_lines()
    assert entries[0][0] == "error", "the first filter must turn warnings into errors"
    problems = [p for e, c in entries if (p := _filter_problem(e, c))]
    assert not problems, "\n".join(problems)
