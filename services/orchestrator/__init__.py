"""The reference service under test: an AI-agent task orchestrator on FastAPI and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import ServiceProcess, serve
    from .settings import Settings, load_settings

__all__ = ["ServiceProcess", "Settings", "load_settings", "serve"]

_EXPORTS = {"ServiceProcess": "server", "serve": "server", "Settings": "settings",
            "load_settings": "settings"}


def __getattr__(name: str) -> Any:
    # lazy, so `loadproof --help` does not load FastAPI and SQLAlchemy
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
