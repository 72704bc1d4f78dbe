"""Order routes: propose, list, show, approve, reject, retry, checkout within an order."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from ...durations import MAX_WAIT_SECONDS
from ...surface.middleware import blank_names
from ...surface.operations import CheckoutFilters
from ...types import as_id
from .. import idempotent
from .. import responses as R
from ..deps import ApproveAuth, CheckoutAuth, ProposeAuth, RejectAuth, ViewAuth, state
from ..query import known_query, reads_any_query
from ..responses import declare
from ..schemas import ProposeBody, RejectBody

router = APIRouter(tags=["orders"], dependencies=[Depends(known_query)])


@router.post(
    "/propose",
    status_code=201,
    summary="Propose (create and plan) an order",
    responses=declare({201: R.OrderCreated, 200: R.OrderFound}),
)
def propose(request: Request, auth: ProposeAuth, body: ProposeBody) -> JSONResponse:
    caller = auth.caller()
    ops = state(request).ops
    return idempotent.run(
        request,
        caller,
        "propose",
        "",
        body.fingerprint_fields(),
        lambda c: ops.propose(
            c, body.type, body.payload, body.meta, body.priority, body.dedupe_key, body.tenant_id
        ),
    )


@router.get(
    "/orders",
    summary="List orders (filters, sorts, pages of SPEC §6.2)",
    responses=declare({200: R.OrderPage}, idempotent=False),
)
@reads_any_query
def list_orders(request: Request, auth: ViewAuth) -> JSONResponse:
    caller = auth.caller()
    # a parameter sent empty is absent (surface/middleware.py), its name still checked
    blanks = [(name, "") for name in blank_names(request.scope)]
    params = [*request.query_params.multi_items(), *blanks]
    status, body = state(request).ops.list_orders(caller, params)
    return JSONResponse(body, status)


@router.get(
    "/orders/{order_id}",
    summary="An order with its items and latest events",
    responses=declare({200: R.OrderShown}, idempotent=False),
)
def get_order(request: Request, auth: ViewAuth, order_id: str) -> JSONResponse:
    caller = auth.caller()
    return idempotent.respond(state(request).ops.get_order(caller, order_id))


@router.post(
    "/orders/{order_id}/checkout",
    summary="Lease the next item of this order",
    responses=declare({200: R.Checkout}),
)
def checkout_order(request: Request, auth: CheckoutAuth, order_id: str) -> JSONResponse:
    ops = state(request).ops
    with auth.checkout_caller() as caller:
        # the key's target is the order's id as a UUID: ``global``, the global checkout's
        # own target, is no order (404), and never the global checkout's key
        target = str(as_id(order_id, "order"))
        return idempotent.run(
            request,
            caller,
            "checkout",
            target,
            {},
            lambda c: ops.checkout(c, CheckoutFilters(), order_id),
        )


@router.post(
    "/orders/{order_id}/approve",
    status_code=202,
    summary="Approve; apply runs later",
    responses=declare({202: R.ApprovePending, 200: R.ApproveSettled}),
)
def approve(
    request: Request,
    auth: ApproveAuth,
    order_id: str,
    wait: float | None = Query(default=None, ge=0, le=MAX_WAIT_SECONDS),
) -> JSONResponse:
    caller = auth.caller()
    ops = state(request).ops
    asked = ops.approve_request(wait)
    return idempotent.run(
        request, caller, "approve", order_id, asked, lambda c: ops.approve(c, order_id, wait)
    )


@router.post(
    "/orders/{order_id}/reject",
    summary="Reject (optionally for rework)",
    responses=declare({200: R.OrderAnswer}),
)
def reject(
    request: Request,
    auth: RejectAuth,
    order_id: str,
    body: RejectBody,
) -> JSONResponse:
    caller = auth.caller()
    ops = state(request).ops
    errors = [e.model_dump() for e in body.errors]
    return idempotent.run(
        request,
        caller,
        "reject",
        order_id,
        body.fingerprint_fields(),
        lambda c: ops.reject(c, order_id, errors, body.allow_rework),
    )


@router.post(
    "/orders/{order_id}/retry",
    summary="Put a failed order back to work",
    responses=declare({200: R.OrderAnswer}),
)
def retry(request: Request, auth: ApproveAuth, order_id: str) -> JSONResponse:
    caller = auth.caller()
    ops = state(request).ops
    return idempotent.run(request, caller, "retry", order_id, {}, lambda c: ops.retry(c, order_id))
