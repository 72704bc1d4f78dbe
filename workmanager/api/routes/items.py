"""Item routes: checkout, heartbeat, submit, parts, finalize, release, fail, logs.

The lease an agent presents is the path's item id, the ``X-Lease-Token`` header and the
caller's agent id (SPEC §4.4).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from ...errors import ValidationFailed, problem
from ...surface.operations import CheckoutFilters
from .. import idempotent
from .. import responses as R
from ..deps import CheckoutAuth, SubmitAuth, ViewAuth, state
from ..query import also_refuses, known_query
from ..responses import declare
from ..schemas import (
    HIGHEST,
    LOWEST,
    NOT_CHECKOUT_FILTERS,
    CheckoutBody,
    FailBody,
    FinalizeBody,
    HeartbeatBody,
    PartBody,
    SubmitBody,
    not_a_checkout_filter,
)

router = APIRouter(tags=["items"], dependencies=[Depends(known_query)])
LeaseToken = Header(default=None, alias="X-Lease-Token", description="the lease token")


@router.post(
    "/checkout",
    summary="Lease the next eligible item",
    responses=declare({200: R.Checkout}),
)
@also_refuses(*NOT_CHECKOUT_FILTERS)
def checkout(
    request: Request,
    auth: CheckoutAuth,
    body: CheckoutBody | None = None,
    type: str | None = Query(default=None, min_length=1, max_length=191),
    min_priority: int | None = Query(default=None, ge=LOWEST, le=HIGHEST),
    tenant_id: str | None = Query(default=None, max_length=191),
) -> JSONResponse:
    with auth.checkout_caller() as caller:
        for name in NOT_CHECKOUT_FILTERS:
            if request.query_params.get(name):
                raise ValidationFailed.at(name, not_a_checkout_filter(name), "not")
        # Filters from the query string (upstream agents send them there) and the body.
        filters = {"type": type, "min_priority": min_priority, "tenant_id": tenant_id}
        b = merge_filters(body or CheckoutBody(), filters)
        wanted = CheckoutFilters(b.type, b.min_priority, b.tenant_id)
        ops = state(request).ops
        return idempotent.run(
            request,
            caller,
            "checkout",
            "global",
            b.fingerprint_fields(),
            lambda c: ops.checkout(c, wanted),
        )


def merge_filters(body: CheckoutBody, query: dict[str, Any]) -> CheckoutBody:
    """The body's filters completed by the query string's; one given in both with two
    values is refused rather than one of them silently ignored."""
    if all(value is None for value in query.values()):
        return body  # the usual case: nothing to merge, nothing to validate again
    fields = body.model_dump()
    conflicts = []
    for name, value in query.items():
        if value is None:
            continue
        if fields.get(name) is not None and fields[name] != value:
            why = "given in the query string and the body with different values"
            conflicts.append(problem(name, why, "conflict"))
        fields[name] = value
    if conflicts:
        raise ValidationFailed(conflicts)
    return CheckoutBody(**fields)


@router.post(
    "/items/{item_id}/heartbeat",
    summary="Extend the lease",
    responses=declare({200: R.Heartbeat}),
)
def heartbeat(
    request: Request,
    auth: CheckoutAuth,
    item_id: str,
    body: HeartbeatBody | None = None,
    token: str | None = LeaseToken,
) -> JSONResponse:
    caller = auth.caller(item_id)
    b = body or HeartbeatBody()
    ops = state(request).ops
    return idempotent.run(
        request,
        caller,
        "heartbeat",
        item_id,
        b.fingerprint_fields(),
        lambda c: ops.heartbeat(c, item_id, token, b.progress, b.checkpoint),
    )


@router.post(
    "/items/{item_id}/submit",
    status_code=202,
    summary="Submit the whole result",
    responses=declare({202: R.Submitted}),
)
def submit(
    request: Request,
    auth: SubmitAuth,
    item_id: str,
    body: SubmitBody,
    token: str | None = LeaseToken,
) -> JSONResponse:
    caller = auth.caller(item_id)
    ops = state(request).ops
    return idempotent.run(
        request,
        caller,
        "submit",
        item_id,
        body.fingerprint_fields(),
        lambda c: ops.submit(c, item_id, token, body.result, body.evidence, body.notes),
    )


@router.post(
    "/items/{item_id}/parts",
    status_code=202,
    summary="Submit one part",
    responses=declare({202: R.PartStored}),
)
def submit_part(
    request: Request,
    auth: SubmitAuth,
    item_id: str,
    body: PartBody,
    token: str | None = LeaseToken,
) -> JSONResponse:
    caller = auth.caller(item_id)
    ops = state(request).ops
    return idempotent.run(
        request,
        caller,
        "submit-part",
        item_id,
        body.fingerprint_fields(),
        lambda c: ops.submit_part(
            c, item_id, token, body.part_key, body.payload, body.seq, body.evidence, body.notes
        ),
    )


@router.get(
    "/items/{item_id}/parts",
    summary="The item's parts",
    responses=declare({200: R.PartList}, idempotent=False),
)
def list_parts(
    request: Request,
    auth: ViewAuth,
    item_id: str,
    part_key: str | None = Query(default=None, max_length=191),
    status: str | None = Query(default=None, max_length=16),
) -> JSONResponse:
    caller = auth.caller()
    return idempotent.respond(state(request).ops.list_parts(caller, item_id, part_key, status))


@router.post(
    "/items/{item_id}/finalize",
    status_code=202,
    summary="Assemble parts and submit",
    responses=declare({202: R.Finalized}),
)
def finalize(
    request: Request,
    auth: SubmitAuth,
    item_id: str,
    body: FinalizeBody | None = None,
    token: str | None = LeaseToken,
) -> JSONResponse:
    caller = auth.caller(item_id)
    b = body or FinalizeBody()
    ops = state(request).ops
    return idempotent.run(
        request,
        caller,
        "finalize",
        item_id,
        b.fingerprint_fields(),
        lambda c: ops.finalize(c, item_id, token, b.mode),
    )


@router.post(
    "/items/{item_id}/release",
    summary="Give the item back",
    responses=declare({200: R.ItemAnswer}),
)
def release(
    request: Request,
    auth: CheckoutAuth,
    item_id: str,
    token: str | None = LeaseToken,
) -> JSONResponse:
    caller = auth.caller(item_id)
    ops = state(request).ops
    return idempotent.run(
        request, caller, "release", item_id, {}, lambda c: ops.release(c, item_id, token)
    )


@router.post(
    "/items/{item_id}/fail",
    summary="Report that the work failed",
    responses=declare({200: R.ItemAnswer}),
)
def fail(
    request: Request,
    auth: SubmitAuth,
    item_id: str,
    body: FailBody,
    token: str | None = LeaseToken,
) -> JSONResponse:
    caller = auth.caller(item_id)
    ops = state(request).ops
    error = body.error.model_dump()
    return idempotent.run(
        request,
        caller,
        "fail",
        item_id,
        body.fingerprint_fields(),
        lambda c: ops.fail(c, item_id, token, error, body.retryable),
    )


@router.get(
    "/items/{item_id}/logs",
    summary="Item events and order-level events",
    responses=declare({200: R.Logs}, idempotent=False),
)
def logs(
    request: Request,
    auth: ViewAuth,
    item_id: str,
    limit: int = Query(default=100, ge=1, le=100),
) -> JSONResponse:
    caller = auth.caller()
    return idempotent.respond(state(request).ops.logs(caller, item_id, limit))
