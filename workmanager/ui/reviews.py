"""The console's review pages: the queue of submitted orders, the orders list, an order's
page, and its review actions (approve, reject, retry), each once per rendered form and
refused when the order moved on since its page was drawn (:func:`unchanged`)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from ..errors import IllegalStateTransition, InvalidQuery
from ..services.orders import REVIEWER_REJECTION
from ..surface.callers import Caller
from ..surface.operations import Answer, Operations
from ..types import as_id
from .pages import (
    PENDING,
    Signed,
    back,
    caller_of,
    checked_form,
    console,
    flash_of,
    once,
    pages_link,
    render,
    router,
)


# --- the review queue and orders --------------------------------------------------------
@router.get("/queue", include_in_schema=False)
def queue(request: Request, sess: Signed) -> HTMLResponse:
    tenant = sess.principal.tenant_id
    queue = console(request).overview.review_queue(tenant=tenant)
    return render(request, "queue.html", sess, queue=queue)


@router.get("/orders", include_in_schema=False)
def orders(request: Request, sess: Signed) -> HTMLResponse:
    # the page shows its own columns: sparse fieldsets (fields[orders]=state) are the API's
    params = [
        (k, v)
        for k, v in request.query_params.multi_items()
        if v != "" and not k.startswith("fields[")
    ]
    _, page = console(request).api.ops.list_orders(caller_of(request, sess), params)
    return render(
        request, "orders.html", sess, page=page, params=dict(params), pages=pages_link(params)
    )


@router.get("/orders/{order_id}", include_in_schema=False)
def order(request: Request, order_id: str, sess: Signed) -> HTMLResponse:
    c = console(request)
    caller = caller_of(request, sess)
    _, body = c.api.ops.get_order(caller, order_id)
    view = body["order"]
    oid = as_id(order_id, "order")
    shown, pager = _items_page(view["items"], request.query_params.get("items_page"))
    ids = [uuid.UUID(item["id"]) for item in shown]
    parts = {
        item["id"]: c.api.ops.list_parts(caller, item["id"])[1]
        for item in shown
        if item.get("parts_required") or item.get("parts_state")
    }
    events, total_events = c.overview.timeline(oid)
    return render(
        request,
        "order.html",
        sess,
        order=view,
        shown=shown,
        items_pager=pager,
        events=events,
        total_events=total_events,
        provenance=c.overview.provenance(oid, ids),
        submissions=c.overview.submissions(oid, ids),
        parts=parts,
        preview=c.overview.preview(oid),
        flash=flash_of(request.query_params.get("done")),
    )


#: Items one order page shows (``?items_page=N`` for the others): an order of 10,000
#: items printed them all, a page of 12 MB that took 4 s to make.
ITEMS_SHOWN = 50


def _items_page(
    items: list[dict[str, Any]], asked: str | None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The items of page ``asked`` (1 when not given; past the last: the last) and the
    pager's figures."""
    last = max(1, -(-len(items) // ITEMS_SHOWN))
    if asked is None:
        number = 1
    elif asked.isascii() and asked.isdigit() and int(asked) >= 1:
        number = min(int(asked), last)
    else:
        raise InvalidQuery(
            f"items_page must be a page number from 1 to {last}, got {asked[:40]!r}",
            details={"parameter": "items_page"},
        )
    start = (number - 1) * ITEMS_SHOWN
    pager = {"current_page": number, "last_page": last, "from": start + 1, "total": len(items)}
    return items[start : start + ITEMS_SHOWN], pager


@router.post("/orders/{order_id}/approve", include_in_schema=False)
def approve(
    request: Request,
    order_id: str,
    sess: Signed,
    csrf: str = Form(""),
    key: str = Form(""),
    seen: str = Form(""),
) -> Response:
    caller = checked_form(request, sess, csrf)
    ops = console(request).api.ops

    def approve(c: Caller) -> Answer:
        unchanged(c, ops, order_id, seen)
        return ops.approve(c, order_id)

    ran = once(request, caller, "approve", order_id, key, {}, approve)
    return back(f"/orders/{order_id}", done="approved" if ran else PENDING)


def unchanged(caller: Caller, ops: Operations, order_id: str, seen: str) -> None:
    """Refuse a review action on an order that moved on since its page was drawn
    (``seen``: the order's ``last_transitioned_at`` then). A page left open while the
    order was sent back for rework and submitted again approved, or rejected, a result
    its reviewer never saw. Its submission (a full agent round) cannot fit between this
    read and the action's own lock on the order. A form without ``seen`` is not checked."""
    if not seen:
        return
    _, body = ops.get_order(caller, order_id)
    now = body["order"]
    if now["last_transitioned_at"] != seen:
        raise IllegalStateTransition(
            f"this order changed since the page was drawn (it is {now['state']} since"
            f" {now['last_transitioned_at']}): nothing was done; reload the page and review"
            " what it holds now",
            details={"seen": seen, "last_transitioned_at": now["last_transitioned_at"]},
        )


@router.post("/orders/{order_id}/reject", include_in_schema=False)
def reject(
    request: Request,
    order_id: str,
    sess: Signed,
    csrf: str = Form(""),
    key: str = Form(""),
    reason: str = Form(""),
    allow_rework: str = Form(""),
    seen: str = Form(""),
) -> Response:
    caller = checked_form(request, sess, csrf)
    ops = console(request).api.ops
    rework = allow_rework in ("1", "on", "true")
    message = reason.strip() or "rejected in the review console"
    errors: list[Any] = [{"code": REVIEWER_REJECTION, "message": message}]
    body = {"errors": errors, "allow_rework": rework}

    def reject(c: Caller) -> Answer:
        unchanged(c, ops, order_id, seen)
        return ops.reject(c, order_id, errors, allow_rework=rework)

    ran = once(request, caller, "reject", order_id, key, body, reject)
    done = ("reworked" if rework else "rejected") if ran else PENDING
    return back(f"/orders/{order_id}", done=done)


@router.post("/orders/{order_id}/retry", include_in_schema=False)
def retry(
    request: Request,
    order_id: str,
    sess: Signed,
    csrf: str = Form(""),
    key: str = Form(""),
) -> Response:
    caller = checked_form(request, sess, csrf)
    ops = console(request).api.ops
    ran = once(request, caller, "retry", order_id, key, {}, lambda c: ops.retry(c, order_id))
    return back(f"/orders/{order_id}", done="retried" if ran else PENDING)
