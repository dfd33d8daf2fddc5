"""loadproof: measured, traceable before/after evidence from real k6 load tests."""

__version__ = "0.1.0"
