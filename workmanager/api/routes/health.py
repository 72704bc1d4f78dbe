"""``/healthz`` (the process answers), ``/readyz`` (its backing services do) and, with the
``prometheus`` metrics driver, ``/metrics`` (this process's registry, for scraping)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ... import readiness
from ...errors import NotFound, Unavailable, WorkManagerError
from ...metrics.prometheus import PrometheusDriver
from ...surface.middleware import retry_after
from ..deps import bearer, principal, state
from ..responses import Health, Readiness, declare

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness", responses=declare({200: Health}, idempotent=False))
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _identified(request: Request) -> bool:
    """Whether the caller showed a valid token (any scope), or auth is off. A token that
    cannot be checked now (the database down) does not count: no reasons then."""
    if state(request).auth_enabled and bearer(request) is None:
        return False
    try:
        principal(request)
    except WorkManagerError:
        return False
    return True


@router.get(
    "/readyz",
    summary="Readiness: database, broker and Redis (when used)",
    responses=declare({200: Readiness, 503: Readiness}, idempotent=False),
)
async def readyz(request: Request) -> JSONResponse:
    """Anyone learns whether each dependency is up; only a caller with a valid token
    learns why one is down (driver messages name hosts, ports and users). Run on a thread
    of its own, not one of the requests' (under load with the database frozen, every one
    of those waited on it, and the probe that says so waited behind them)."""
    return await asyncio.to_thread(_readyz, request)


def _readyz(request: Request) -> JSONResponse:
    checks = readiness.check(state(request).wm.ctx)
    ready = all(v == "ok" for v in checks.values())
    # the token is checked in the database: with it frozen (no answer to the probe), the
    # check would wait as long as the freeze, so the reasons go to nobody then (`ops check`
    # has them)
    if "no answer" in checks["database"] or not _identified(request):
        checks = readiness.names_only(checks)
    if ready:
        return JSONResponse({"status": "ok", "checks": checks})
    body = {
        "status": "unavailable",
        "checks": checks,
        "error": {"code": "unavailable", "message": "a backing service is down"},
    }
    wait = retry_after(Unavailable("a backing service is down"))
    return JSONResponse(body, 503, headers={"Retry-After": str(wait)})


@router.get(
    "/metrics",
    summary="Prometheus exposition (WORK_MANAGER_METRICS_DRIVER=prometheus)",
    response_class=PlainTextResponse,
    responses={200: {"description": "the Prometheus text exposition format"}},
)
def metrics(request: Request) -> Response:
    driver = state(request).wm.metrics.driver
    if not isinstance(driver, PrometheusDriver):
        raise NotFound(
            "/metrics is served with WORK_MANAGER_METRICS_DRIVER=prometheus",
            details={"metrics_driver": state(request).wm.settings.metrics_driver},
        )
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(driver.registry), media_type=CONTENT_TYPE_LATEST)
