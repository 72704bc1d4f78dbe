"""Idempotency keys on the enforced routes (SPEC §6.3), over ``wm.idempotency``.

The key comes from the configured header (or ``Idempotency-Key``) and is scoped by
endpoint, target resource and principal; the body and the ``X-Lease-Token`` presented are
its fingerprint. A replay answers the stored status and body with
``Idempotent-Replayed: true``; a failure is not stored (the claim is abandoned). A key sent
on an endpoint outside ``ENFORCE_ON`` is honoured the same way; only its absence differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ..errors import IdempotencyKeyRequired, ValidationFailed
from ..services.idempotency import Replay
from ..surface.callers import Caller
from ..surface.operations import Answer
from .deps import state

FALLBACK_HEADER = "Idempotency-Key"
LEASE_TOKEN_HEADER = "X-Lease-Token"
REPLAYED = "Idempotent-Replayed"


def respond(answer: Answer) -> JSONResponse:
    status, body = answer
    return JSONResponse(body, status)


def _key(request: Request, header: str) -> str | None:
    """The key sent, in the configured header or ``Idempotency-Key``; two different keys
    are refused (which one the client meant to retry with is not ours to guess)."""
    named, fallback = request.headers.get(header), request.headers.get(FALLBACK_HEADER)
    if named and fallback and named != fallback and header.lower() != FALLBACK_HEADER.lower():
        raise ValidationFailed.at(
            f"header:{FALLBACK_HEADER}",
            f"{header} and {FALLBACK_HEADER} name different keys; send one of them",
            "conflict",
            "two different idempotency keys",
        )
    return named or fallback


def run(
    request: Request,
    caller: Caller,
    endpoint: str,
    target: str,
    body: Any,
    operation: Callable[[Caller], Answer],
) -> JSONResponse:
    """Run ``operation`` once per idempotency key: a key is required where ``endpoint`` is
    enforced, and honoured wherever one is sent (as upstream: a retried request with its
    key never acts twice, enforced or not)."""
    api = state(request)
    settings = api.wm.settings
    header = settings.idempotency_header
    key = _key(request, header)
    if not key:
        if endpoint not in settings.idempotency_enforce_on:
            return respond(operation(caller))
        raise IdempotencyKeyRequired(
            f"this endpoint requires the {header} header", details={"header": header}
        )
    lease_token = request.headers.get(LEASE_TOKEN_HEADER)
    answer = api.wm.idempotency.once(
        caller, endpoint, target, key, body, operation, lease_token=lease_token
    )
    if isinstance(answer, Replay):
        return JSONResponse(answer.body, answer.status, headers={REPLAYED: "true"})
    return respond(answer)
