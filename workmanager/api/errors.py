"""The one place errors become HTTP responses (SPEC §6.1).

Every :class:`WorkManagerError` answers with its own ``http_status`` and the envelope
``{"error": {code, message, details?}}``; 503s and 429s add ``Retry-After``. Request validation
becomes ``400 malformed_json`` (the body is not JSON), ``400 invalid_query`` (a query
parameter) or ``422 validation_failed`` (the body's shape); Starlette's own 404/405 keep
their status in the same envelope. Anything else is handled by the request middleware.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .. import saying
from ..errors import (
    InvalidQuery,
    MalformedJSON,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    ValidationFailed,
    WorkManagerError,
    problem,
)
from ..surface.middleware import retry_after
from .deps import PENDING_AUTH, Auth

#: Starlette's refusals of a form over its limits (a field over 1 MiB, more than 1,000
#: fields or files), which it raises as 400s.
_FORM_TOO_LARGE = re.compile(r"^(Field|Part) exceeded maximum size|^Too many (fields|files)\.")

_HTTP_CODES = {
    400: "malformed_json",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ErrorResponse(JSONResponse):
    """The envelope, rendered ASCII-escaped: an error may echo what the caller sent (a path,
    a key), and a lone surrogate there (``"\\ud800"``) has no UTF-8 encoding; escaped, it
    goes back as the same JSON string instead of failing the response (a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


def error_response(error: WorkManagerError, headers: dict[str, str] | None = None) -> JSONResponse:
    extra = dict(headers or {})
    if (wait := retry_after(error)) is not None:
        extra["Retry-After"] = str(wait)
    return ErrorResponse({"error": error.to_dict()}, error.http_status, headers=extra)


def _path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc[1:]) or str(loc[0] if loc else "body")


def _where(error: Any) -> str:
    loc = tuple(error.get("loc", ()))
    return str(loc[0]) if loc else ""


def validation_error(exc: RequestValidationError) -> WorkManagerError:
    """Map FastAPI's validation error to the product's own."""
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return MalformedJSON("the request body is not valid JSON")
    details = [
        problem(_path(tuple(e.get("loc", ()))), e.get("msg", ""), e.get("type", "")) for e in errors
    ]
    if all(_where(e) == "query" for e in errors):
        return InvalidQuery("invalid query parameter", details=details)
    if any(_where(e) == "path" for e in errors):
        return NotFound("not found")
    return ValidationFailed(details, "the request failed validation")


def not_json(request: Request) -> ValidationFailed | None:
    """A body sent as something other than JSON (``curl -d`` sends a form): said so, not
    pydantic's "Input should be a valid dictionary" about a body it never read. Without a
    ``Content-Type`` the body is read as JSON."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not kind or kind == "application/json" or kind.endswith("+json"):
        return None
    return ValidationFailed.at(
        "body",
        "send the body as JSON with the header Content-Type: application/json",
        "content_type",
        f"the request body must be JSON, not {kind[:80]}",
    )


def http_error(exc: HTTPException) -> WorkManagerError:
    """Starlette's HTTP error (a 404 route, a 405, a form field over its size) as ours:
    the code its status names, its detail the message."""
    detail = str(exc.detail)
    if exc.status_code == 400 and _FORM_TOO_LARGE.search(detail):
        return PayloadTooLarge(detail)  # a form over Starlette's limits: too large, not bad
    error = WorkManagerError(detail)
    error.code, error.http_status = _HTTP_CODES.get(exc.status_code, "http_error"), exc.status_code
    return error


async def _on_domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WorkManagerError)
    if isinstance(exc, Unavailable):
        where = f"{request.method} {request.url.path}"
        saying.unavailable(exc.code, exc.message, type(exc).__name__, where)
    return error_response(exc)


def install_for_host(app: FastAPI) -> None:
    """A host app's handler of workmanager's own errors (``WorkOrderGuard``'s 403, a 503
    when the database is down): the envelope. The host's ``HTTPException``s and request
    validation keep FastAPI's answers: the API's handlers below read them as the API's
    routes (a bad path parameter is a 404 there), and changed a host's 422s into 404s and
    400s."""
    app.add_exception_handler(WorkManagerError, _on_domain)


def install(app: FastAPI) -> None:
    """Register the API's handlers on ``app`` (:func:`~workmanager.api.create_app`)."""

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # The route never ran, so neither did its credentials check (deps.Auth): a caller
        # with a bad token or without the scope is told that, not how its body failed.
        auth: Auth | None = getattr(request.state, PENDING_AUTH, None)
        if auth is not None:
            try:
                await run_in_threadpool(auth.caller)
            except WorkManagerError as refused:
                return error_response(refused)
        body = any(_where(e) == "body" for e in exc.errors())
        return error_response((body and not_json(request)) or validation_error(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return error_response(http_error(exc), dict(exc.headers or {}))

    app.add_exception_handler(WorkManagerError, _on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
