"""The reference service under test: an AI-agent task orchestrator on FastAPI and PostgreSQL."""

from .server import ServiceProcess, serve
from .settings import Settings, load_settings

__all__ = ["ServiceProcess", "Settings", "load_settings", "serve"]
