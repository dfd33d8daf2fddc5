"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from ...db import pool_figures
from ...state import DB_FAILURES
from ...telemetry import exposition
from ..deps import StateDep

router = APIRouter()

READY_TIMEOUT_S = 0.5


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "live"}


@router.get("/health/ready")
async def ready(state: StateDep) -> JSONResponse:
    """Ready when the database answers within a short timeout."""
    components: dict[str, object] = {}
    failing: list[str] = []
    try:
        async with asyncio.timeout(READY_TIMEOUT_S), state.engine.connect() as conn:
            backend_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        # the backend's pid lets a load runner on the same machine find the database's
        # processes (its postmaster is the backend's parent) and wait for them to exit
        components["database"] = {"status": "ok", "backend_pid": backend_pid}
    except DB_FAILURES as exc:
        components["database"] = {"status": "down", "error": exc.__class__.__name__}
        failing.append("database")
    components["pool"] = pool_figures(state.engine)
    if state.worker_engine is not state.engine:
        components["worker_pool"] = pool_figures(state.worker_engine)
    if state.breaker is not None:
        components["breaker"] = {"state": state.breaker.state.value,
                                 "consecutive_failures": state.breaker.consecutive_failures}
    if state.limiter is not None:
        components["rate_limiter"] = {"rate_rps": state.limiter.rate,
                                      "burst": state.limiter.burst,
                                      "rejected_total": state.limiter.rejected_total}
    if state.admission is not None:
        components["admission"] = {"limit": state.admission.limit,
                                   "in_flight": state.admission.in_flight,
                                   "standing_queue": state.admission.standing,
                                   "shed_total": state.admission.shed_total}
    body = {"status": "ready" if not failing else "not_ready", "failing": failing,
            "profile": state.settings.profile, "components": components}
    return JSONResponse(body, status_code=200 if not failing else 503)


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    """Prometheus text format."""
    t = state.telemetry
    pools = {"api": state.engine}
    if state.worker_engine is not state.engine:
        pools["worker"] = state.worker_engine
    for name, engine in pools.items():
        figures = pool_figures(engine)
        t.pool_size.labels(name).set(figures["size"])
        t.pool_checked_out.labels(name).set(figures["checked_out"])
        t.pool_overflow.labels(name).set(figures["overflow"])
    if state.admission is not None:
        t.admission_limit.set(state.admission.limit)
        t.admission_in_flight.set(state.admission.in_flight)
        t.admission_standing.set(1 if state.admission.standing else 0)
        if state.admission.last_window_p90_s is not None:
            t.admission_window_p90.set(state.admission.last_window_p90_s)
        if state.admission.drain_rate is not None:
            t.admission_drain_rate.set(state.admission.drain_rate)
    try:
        async with asyncio.timeout(READY_TIMEOUT_S), state.worker_engine.connect() as conn:
            depth = (await conn.execute(
                text("SELECT count(*) FROM tasks WHERE status = 'queued'"))).scalar_one()
        t.queue_depth.set(depth)
    except DB_FAILURES:
        pass  # keep the last known depth; readiness reports the outage
    return Response(exposition(t), media_type=CONTENT_TYPE_LATEST)
