"""The app factory: ``create_app(wm)`` → the ASGI app of SPEC §6."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from .. import __version__, tracing, ui
from ..container import WorkManager
from ..services.tokens import TokenService
from ..settings import auth_none_warning
from ..surface.middleware import RequestContextMiddleware
from ..surface.operations import Operations
from . import errors, openapi
from .deps import ApiState
from .routes import health, items, orders, provenance

log = logging.getLogger("workmanager.api")

AUTH_NONE_WARNING = auth_none_warning("the HTTP API")


def create_app(wm: WorkManager) -> FastAPI:
    """Build the HTTP API over ``wm`` (routes under ``settings.api_prefix``)."""
    settings = wm.settings
    auth_enabled = settings.auth != "none"
    if not auth_enabled:
        log.warning(AUTH_NONE_WARNING)
    app = FastAPI(
        title="workmanager",
        version=__version__,
        description="Work orders for AI agents: propose, lease, submit, approve, apply.",
        strict_content_type=False,
        # /checkout/ is no route (404, the envelope): Starlette's 307 to the path without
        # the slash built its Location from the request's Host header
        redirect_slashes=False,
    )
    app.state.api = ApiState(wm, Operations(wm), TokenService(wm.ctx), auth_enabled)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(orders.router, prefix=settings.api_prefix)
    app.include_router(items.router, prefix=settings.api_prefix)
    app.include_router(provenance.router, prefix=settings.api_prefix)
    ui.mount(app, app.state.api)  # the review console under /ui (SPEC §13)
    openapi.install(app, settings, auth_enabled)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
        body_timeout=settings.api_body_timeout_seconds,
        form_prefix=ui.PREFIX + "/",
    )
    if tracing.enabled(settings):
        tracing.instrument_app(app)  # a server span per request, continuing `traceparent`
    return app
