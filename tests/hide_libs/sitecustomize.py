"""Make optional shared libraries look absent, to test what a fresh machine sees.

Put this folder first on PYTHONPATH and name the libraries in LOADPROOF_HIDE_LIBS
(comma-separated parts of a library name, e.g. ``harfbuzz-subset,harfbuzz-vector``)::

    PYTHONPATH=$PWD/tests/hide_libs LOADPROOF_HIDE_LIBS=harfbuzz-subset pytest tests/test_pipeline.py

Python imports ``sitecustomize`` at start-up in every process, so the hiding also holds in
subprocesses (notebook kernels, the CLI). Loading a hidden library through cffi
(``FFI.dlopen``, what WeasyPrint uses) or ctypes (``CDLL``) raises OSError, as the dynamic
loader does for a library that is not installed. No root and no system change needed.
"""

from __future__ import annotations

import os

HIDDEN = tuple(part.strip().lower() for part in os.environ.get("LOADPROOF_HIDE_LIBS", "").split(",")
               if part.strip())


def _hidden(name: object) -> bool:
    text = os.path.basename(str(name or "")).lower()
    return any(part in text for part in HIDDEN)


def _install() -> None:
    import ctypes

    original_cdll_init = ctypes.CDLL.__init__

    def cdll_init(self: ctypes.CDLL, name: str | None, *args: object, **kwargs: object) -> None:
        if _hidden(name):
            raise OSError(f"{name}: cannot open shared object file (hidden by LOADPROOF_HIDE_LIBS)")
        original_cdll_init(self, name, *args, **kwargs)  # type: ignore[arg-type]

    ctypes.CDLL.__init__ = cdll_init  # type: ignore[method-assign]

    try:
        import cffi
    except ImportError:
        return
    original_dlopen = cffi.FFI.dlopen

    def dlopen(self: cffi.FFI, name: object, *args: object, **kwargs: object) -> object:
        if _hidden(name):
            raise OSError(f"{name}: cannot open shared object file (hidden by LOADPROOF_HIDE_LIBS)")
        return original_dlopen(self, name, *args, **kwargs)  # type: ignore[arg-type]

    cffi.FFI.dlopen = dlopen  # type: ignore[method-assign]


if HIDDEN:
    _install()
