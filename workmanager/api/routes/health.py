"""``/healthz`` (the process answers) and ``/readyz`` (its backing services do)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ...services import readiness
from ..deps import state
from ..errors import RETRY_AFTER_SECONDS

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="Readiness: database, broker and Redis (when used)")
def readyz(request: Request) -> JSONResponse:
    checks = readiness.check(state(request).wm.ctx)
    ready = all(v == "ok" for v in checks.values())
    if ready:
        return JSONResponse({"status": "ok", "checks": checks})
    body = {
        "status": "unavailable",
        "checks": checks,
        "error": {"code": "unavailable", "message": "a backing service is down"},
    }
    return JSONResponse(body, 503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
