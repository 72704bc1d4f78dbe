"""The work-order-only guard (SPEC §6.4; upstream ``EnforceWorkOrderOnly``).

Host apps put it on their own mutating routes, so only changes made on behalf of a work
order in an allowed state get through::

    guard = WorkOrderGuard(wm)
    install_error_handlers(app)  # the dependency raises; these answer with the envelope
    @app.post("/customers", dependencies=[Depends(guard)])

    # or for a whole ASGI app (answers by itself, no handlers needed):
    app = WorkOrderOnlyMiddleware(app, wm)

A missing, unknown or not-allowed ``X-Work-Order-ID`` is 403 ``work_order_required``; the
database down, 503 ``unavailable`` (without the driver's text: the host's callers are
not authenticated here).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import anyio.to_thread
from fastapi import Request
from sqlalchemy import select
from starlette.types import ASGIApp, Receive, Scope, Send

from ..container import WorkManager
from ..db.models import Order
from ..errors import Unavailable, WorkManagerError, WorkOrderRequired
from ..services.tokens import unidentified
from ..states import OrderState
from .errors import error_response

HEADER = "X-Work-Order-ID"
#: Orders being worked on or being applied may change the host's data.
DEFAULT_ALLOWED = (OrderState.IN_PROGRESS, OrderState.SUBMITTED, OrderState.APPROVED)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class WorkOrderGuard:
    """A FastAPI dependency; call it with a header value to check it directly."""

    def __init__(self, wm: WorkManager, allowed_states: Iterable[str] = DEFAULT_ALLOWED) -> None:
        self.wm = wm
        self.allowed = frozenset(str(s) for s in allowed_states)

    def check(self, header: str | None) -> uuid.UUID:
        """The order id named by ``header``, or :class:`WorkOrderRequired`."""
        try:
            order_id = uuid.UUID(header or "")
        except ValueError:
            raise WorkOrderRequired(details={"header": HEADER}) from None
        try:
            with self.wm.db.transaction() as s:
                found = s.scalar(select(Order.state).where(Order.id == order_id))
        except Unavailable as exc:  # the host app's callers are not ours: no driver text
            raise unidentified(exc) from exc
        if found not in self.allowed:
            raise WorkOrderRequired(
                details={"header": HEADER, "order_id": str(order_id), "state": found}
            )
        return order_id

    def __call__(self, request: Request) -> uuid.UUID:
        return self.check(request.headers.get(HEADER))


class WorkOrderOnlyMiddleware:
    """The same guard as ASGI middleware over every mutating request of ``app``."""

    def __init__(self, app: ASGIApp, wm: WorkManager, **kwargs: Iterable[str]) -> None:
        self.app = app
        self.guard = WorkOrderGuard(wm, **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = dict(scope.get("headers", ()))
            raw = headers.get(HEADER.lower().encode())
            try:
                value = raw.decode("latin-1") if raw else None
                await anyio.to_thread.run_sync(self.guard.check, value)
            except WorkManagerError as exc:  # 403, or 503 (database down) with Retry-After
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)
