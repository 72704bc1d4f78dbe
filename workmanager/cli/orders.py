"""``workmanager orders create|list|show|review|requeue|retry|clone``."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import click

from .. import deployment
from ..errors import Aborted, DedupeKeyReused, InvalidQuery
from ..reads.listing import OrderListing
from ..services.admin import OrderAdmin, OrderSelector, requeue_many
from ..services.orders import REVIEWER_REJECTION
from ..states import OrderState
from .app import Env, cli, pass_env
from .follow import follow
from .render import (
    COUNT,
    PRIORITY,
    TIMEOUT,
    cell,
    emit,
    emit_json,
    json_object,
    json_option,
    pairs,
    report_error,
    table,
)

ORDER_COLUMNS = ("id", "type", "state", "priority", "items_count", "created_at", "error")
ITEM_COLUMNS = ("id", "state", "attempts", "leased_by_agent_id", "lease_expires_at", "error")
EVENT_COLUMNS = ("id", "created_at", "event", "actor_id", "item_id", "payload")
EVIDENCE_COLUMNS = ("item_id", "source", "agent_id", "evidence", "notes", "at")
SHOW_FIELDS = (
    "id",
    "type",
    "state",
    "priority",
    "requested_by_type",
    "requested_by_id",
    "dedupe_key",
    "tenant_id",
    "payload",
    "meta",
    "last_error",
    "created_at",
    "last_transitioned_at",
    "applied_at",
    "completed_at",
    "diff",
)


@cli.group()
def orders() -> None:
    """Inspect and steer orders."""


def _reason(error: dict[str, Any]) -> str:
    """An ended order's error after its state: the agent's own words, or a reviewer's
    reasons for a rejection, their control characters escaped (render.cell), never a
    terminal's escape sequence on the operator's screen."""
    if not error:
        return ""
    message = error.get("message")
    if message is None and isinstance(error.get("errors"), list):  # a rejection's reasons
        reasons = [e for e in error["errors"] if isinstance(e, dict)]
        message = "; ".join(str(e.get("message")) for e in reasons)
    return f": [{cell(error.get('code'))}] {cell(message)}"


def _with_error(order: dict[str, Any]) -> dict[str, Any]:
    error = order.get("last_error") or {}
    return {**order, "error": error.get("code")}


@orders.command("create")
@click.option("--type", "order_type", required=True, help="a registered order type")
@click.option("--payload", required=True, help="the payload, a JSON object")
@click.option("--priority", default=0, show_default=True, type=PRIORITY, help="higher first")
@click.option("--meta", default=None, help="metadata, a JSON object")
@click.option("--dedupe-key", default=None, help="one order per key (the id derives from it)")
@click.option("--tenant", "tenant_id", default=None, help="the tenant the order belongs to")
@click.option("--wait", is_flag=True, help="follow the order to its end (exit 1 unless completed)")
@click.option("--timeout", default=None, type=TIMEOUT, help="with --wait: give up after SECONDS")
@json_option
@pass_env
def create(
    env: Env,
    order_type: str,
    payload: str,
    priority: int,
    meta: str | None,
    dedupe_key: str | None,
    tenant_id: str | None,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Enqueue an order for the workers, as ``tasks.enqueue_order`` does (checked against
    the order types first); prints its id, or with --wait follows it to its end. A
    --dedupe-key that already names this proposal's order sends nothing (its id is
    printed); one that names another order is refused (dedupe_key_reused)."""
    if timeout is not None and not wait:
        raise click.UsageError("--timeout is for --wait: add --wait, or drop --timeout")
    depth = env.settings.max_json_depth
    body = json_object(payload, depth, "--payload")
    extra = json_object(meta, depth, "--meta") if meta is not None else None
    # The worker would drop a proposal whose key names another order: answer it here.
    found = _repeated(env, order_type, body, dedupe_key, tenant_id) if dedupe_key else None
    if found is None:
        order_id = _send(env, order_type, body, priority, extra, dedupe_key, tenant_id)
    else:
        order_id = uuid.UUID(found["id"])
    if not wait:
        if found is None:
            _done({"id": str(order_id), "state": "enqueued"}, as_json)
        else:
            text = f"{order_id} already exists under that dedupe key ({found['state']}): not sent"
            emit({"id": str(order_id), "state": found["state"], "existing": True}, as_json, text)
        return
    mine = None
    if dedupe_key and found is None:  # another producer may have taken the key meanwhile

        def mine(_: dict[str, Any]) -> None:
            _repeated(env, order_type, body, dedupe_key, tenant_id)

    try:
        order = follow(env.wm.queries, order_id, timeout, mine)
    except KeyboardInterrupt:  # the order was sent and carries on: say which it is
        said = Aborted(
            f"interrupted (Ctrl-C); order {order_id} was enqueued and carries on",
            hint=f"follow it with `workmanager orders show {order_id}`",
        )
        report_error(said, as_json)
        sys.exit(130)
    if as_json:
        emit_json(order)
    else:
        click.echo(f"{order['id']} {order['state']}{_reason(order.get('last_error') or {})}")
    if order["state"] != OrderState.COMPLETED:
        click.get_current_context().exit(1)


def _repeated(
    env: Env, order_type: str, payload: dict[str, Any], key: str, tenant_id: str | None
) -> dict[str, Any] | None:
    """The order ``key`` already names for this proposal (``OrderService.repeated``)."""
    try:
        return env.wm.orders.repeated(order_type, payload, key, tenant_id)
    except DedupeKeyReused as exc:
        exc.hint = "a dedupe key names one order: choose another --dedupe-key"
        raise


def _send(
    env: Env,
    order_type: str,
    payload: dict[str, Any],
    priority: int,
    meta: dict[str, Any] | None,
    dedupe_key: str | None,
    tenant_id: str | None,
) -> uuid.UUID:
    """Send the proposal to the workers (``tasks.enqueue_order``, which says a broker
    that could not take it in one line); its id."""
    from tasks.producer import enqueue_order

    deployment.broker_reaches_others(env.settings)
    return enqueue_order(
        order_type,
        payload,
        priority,
        meta,
        dedupe_key,
        registry=env.wm.registry,
        tenant_id=tenant_id,
    )


@orders.command("list")
@click.option("--state", multiple=True, help="order state (repeat or comma list)")
@click.option("--type", "order_type", multiple=True, help="order type (repeat or comma list)")
@click.option("--sort", default=None, help="e.g. -priority,created_at (as GET /orders)")
@click.option(
    "--limit",
    type=COUNT,
    default=None,
    help="page size (default WORK_MANAGER_DEFAULT_PAGE_SIZE_HTTP, at most ..._MAX_PAGE_SIZE)",
)
@click.option("--page", default=1, show_default=True, type=COUNT)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    help="any filter of the HTTP list, e.g. priority='>=5' or items.state=failed",
)
@click.option("--has-available-items", is_flag=True, help="only orders with an item to lease")
@json_option
@pass_env
def list_orders(
    env: Env,
    state: tuple[str, ...],
    order_type: tuple[str, ...],
    sort: str | None,
    limit: int | None,
    page: int,
    filters: tuple[str, ...],
    has_available_items: bool,
    as_json: bool,
) -> None:
    """List orders with the filters, sorts and pages of the HTTP API."""
    params = [("page[number]", str(page))]
    if limit is not None:  # else the list's own default, as GET /orders without page[size]
        params.append(("page[size]", str(limit)))
    if has_available_items:
        params.append(("filter[has_available_items]", "true"))
    if state:
        params.append(("filter[state]", ",".join(state)))
    if order_type:
        params.append(("filter[type]", ",".join(order_type)))
    if sort:
        params.append(("sort", sort))
    for raw in filters:
        key, sep, value = raw.partition("=")
        if not sep:
            raise click.BadParameter(f"{raw!r} is not KEY=VALUE", param_hint="--filter")
        params.append((f"filter[{key}]", value))
    answer = OrderListing(env.wm.ctx).list(params)
    if as_json:
        emit_json(answer)
        return
    meta = answer["meta"]
    title = f"orders (page {meta['current_page']}/{meta['last_page']}, {meta['total']} total)"
    table([_with_error(o) for o in answer["data"]], ORDER_COLUMNS, title=title)


@orders.command("show")
@click.argument("order_id", type=click.UUID)
@click.option(
    "--events",
    type=click.IntRange(0, COUNT.max),
    default=20,
    show_default=True,
    help="latest events",
)
@json_option
@pass_env
def show(env: Env, order_id: uuid.UUID, events: int, as_json: bool) -> None:
    """An order with its items and latest events."""
    order = env.wm.queries.order(order_id, events=events)
    evidence = env.wm.queries.evidence(order_id)
    if as_json:
        emit_json({**order, "evidence": evidence})
        return
    pairs(order, SHOW_FIELDS, title=f"order {order['id']}")
    table(order["items"], ITEM_COLUMNS, title="items", empty="no items")
    if evidence:
        table(evidence, EVIDENCE_COLUMNS, title="evidence")
    table(order["events"], EVENT_COLUMNS, title="events (newest first)", empty="no events")


def _done(order: dict[str, Any], as_json: bool) -> None:
    emit(order, as_json, f"{order['id']} {order['state']}")


@orders.command("review")
@click.argument("order_id", type=click.UUID)
@click.option("--approve", is_flag=True, help="approve; the apply follows")
@click.option("--reject", is_flag=True, help="reject (needs --reason)")
@click.option("--reason", default=None, help="why it is rejected (stored as the error)")
@click.option("--code", default=REVIEWER_REJECTION, show_default=True, help="error code")
@click.option("--rework", is_flag=True, help="with --reject: send the items back to work")
@json_option
@pass_env
def review(
    env: Env,
    order_id: uuid.UUID,
    approve: bool,
    reject: bool,
    reason: str | None,
    code: str,
    rework: bool,
    as_json: bool,
) -> None:
    """Approve or reject a submitted order."""
    if approve == reject:  # two flags, so that both given is refused, not the last one won
        both = "--approve and --reject exclude each other: choose one"
        raise click.UsageError(both if approve else "choose --approve or --reject")
    wm = env.console
    if approve:
        if reason or rework:
            raise click.UsageError("--reason and --rework go with --reject")
        _done(wm.orders.approve(order_id, env.actor), as_json)
        return
    if not reason:
        raise click.UsageError("--reject needs --reason")
    errors = [{"code": code, "message": reason}]
    _done(wm.orders.reject(order_id, errors, env.actor, allow_rework=rework), as_json)


@orders.command("requeue")
@click.argument("order_id", type=click.UUID, required=False)
@click.option("--order", "selected", type=click.UUID, default=None, help="this order")
@click.option("--type", "order_type", default=None, help="orders of this type")
@click.option("--state", default=None, help="only orders in this state")
@click.option("--all", "select_all", is_flag=True, help="every requeueable order")
@click.option("--requeue-submitted", is_flag=True, help="submitted orders too (rejected, reworked)")
@click.option("--limit", default=100, show_default=True, type=COUNT)
@click.option("--dry-run", is_flag=True, help="show what would change, change nothing")
@json_option
@pass_env
def requeue(
    env: Env,
    order_id: uuid.UUID | None,
    selected: uuid.UUID | None,
    order_type: str | None,
    state: str | None,
    select_all: bool,
    requeue_submitted: bool,
    limit: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Send an order's open work back to the queue, leasable now (rejected orders are
    reworked; held leases are released). ORDER_ID alone: that order, refused if it cannot
    be requeued; selectors (--order --type --state --all): a batch, as upstream's
    orders:requeue, skipping what cannot be requeued."""
    wm = env.console
    admin = OrderAdmin(wm.ctx, wm.orders)
    batch = selected or order_type or state or select_all or requeue_submitted or dry_run
    if order_id is not None and not batch:
        _done(admin.requeue(order_id, env.actor), as_json)
        return
    if order_id is not None and selected is not None and order_id != selected:
        raise click.UsageError("ORDER_ID and --order name different orders")
    selector = OrderSelector(order_id or selected, order_type, state, select_all)
    try:
        selector.require()
    except InvalidQuery as exc:
        raise click.UsageError(exc.message) from None
    result = requeue_many(
        admin,
        selector,
        env.actor,
        requeue_submitted=requeue_submitted,
        limit=limit,
        dry_run=dry_run,
    )
    if as_json:
        emit_json(result.to_dict("orders"))
        return
    title = f"requeue{' (dry run: nothing changed)' if dry_run else ''}"
    columns = ("id", "type", "state", "outcome", "reason")
    table(result.rows, columns, title=title, empty="no order matched")
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(result.counts().items()))
    verb = "would be" if dry_run else "were"
    click.echo(f"{len(result.rows)} order(s) {verb} touched" + (f": {counts}" if counts else ""))


@orders.command("retry")
@click.argument("order_id", type=click.UUID)
@json_option
@pass_env
def retry(env: Env, order_id: uuid.UUID, as_json: bool) -> None:
    """Put a failed order (and its failed items) back to work."""
    _done(env.console.orders.retry(order_id, env.actor), as_json)


@orders.command("clone")
@click.argument("order_id", type=click.UUID)
@click.option("--priority", default=None, type=PRIORITY, help="the clone's (default: the order's)")
@click.option("--dry-run", is_flag=True, help="check the clone's proposal; create nothing")
@json_option
@pass_env
def clone(
    env: Env, order_id: uuid.UUID, priority: int | None, dry_run: bool, as_json: bool
) -> None:
    """Propose a new order with the same type, payload, priority and meta."""
    wm = env.console
    order = OrderAdmin(wm.ctx, wm.orders).clone(order_id, env.actor, priority, dry_run)
    if dry_run:
        emit(
            order,
            as_json,
            f"would clone {order_id} ({order['type']}, priority {order['priority']})",
        )
        return
    emit(order, as_json, f"{order['id']} {order['state']} (clone of {order_id})")
