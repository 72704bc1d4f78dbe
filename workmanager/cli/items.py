"""``workmanager items list|retry`` (SPEC §9)."""

from __future__ import annotations

import uuid

import click

from ..services.admin import MAX_LIMIT, ItemAdmin, ItemFilter
from .app import Env, cli, pass_env
from .render import emit, emit_json, json_option, table

COLUMNS = (
    "id",
    "order_id",
    "order_type",
    "state",
    "attempts",
    "max_attempts",
    "leased_by_agent_id",
    "lease_expires_at",
    "error",
)


@cli.group()
def items() -> None:
    """Inspect and retry work items."""


@items.command("list")
@click.option("--order", "order_id", type=click.UUID, default=None)
@click.option("--state", default=None)
@click.option("--type", "order_type", default=None, help="order type")
@click.option("--agent", "agent_id", default=None, help="holder of the lease")
@click.option("--leased", is_flag=True, help="only items held (leased or in progress)")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, MAX_LIMIT))
@json_option
@pass_env
def list_items(
    env: Env,
    order_id: uuid.UUID | None,
    state: str | None,
    order_type: str | None,
    agent_id: str | None,
    leased: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Items, oldest first."""
    where = ItemFilter(
        order_id=order_id, state=state, type=order_type, agent_id=agent_id, leased=leased
    )
    rows = ItemAdmin(env.wm.ctx).list(where, limit=limit)
    if as_json:
        emit_json(rows)
        return
    shown = [{**r, "error": (r["error"] or {}).get("code")} for r in rows]
    table(shown, COLUMNS, title=f"items ({len(rows)})")


@items.command("retry")
@click.argument("item_id", type=click.UUID, required=False)
@click.option("--order", "order_id", type=click.UUID, default=None, help="failed items of it")
@click.option("--type", "order_type", default=None, help="failed items of this order type")
@click.option("--all", "select_all", is_flag=True, help="every failed item")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, MAX_LIMIT))
@click.option("--dry-run", is_flag=True, help="show what would change, change nothing")
@json_option
@pass_env
def retry(
    env: Env,
    item_id: uuid.UUID | None,
    order_id: uuid.UUID | None,
    order_type: str | None,
    select_all: bool,
    limit: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Put a failed item back to work (its failed order with it). Selectors (--order
    --type --all) retry failed items in a batch, as upstream's items:retry."""
    wm = env.console
    admin = ItemAdmin(wm.ctx)
    if item_id is not None:
        if order_id or order_type or select_all or dry_run:
            raise click.UsageError("ITEM_ID goes alone; use --order, --type or --all for a batch")
        item = admin.retry(item_id, env.actor)
        emit(item, as_json, f"{item['id']} {item['state']}")
        return
    if not (order_id or order_type or select_all):
        raise click.UsageError("name ITEM_ID, or select failed items with --order, --type or --all")
    result = admin.retry_many(
        wm.orders,
        env.actor,
        order_id=order_id,
        order_type=order_type,
        select_all=select_all,
        limit=limit,
        dry_run=dry_run,
    )
    if as_json:
        emit_json(result)
        return
    title = f"retry{' (dry run: nothing changed)' if dry_run else ''}"
    columns = ("id", "order_id", "order_type", "error", "outcome", "reason")
    table(result["items"], columns, title=title, empty="no failed item matched")
    verb = "would be" if dry_run else "were"
    click.echo(f"{len(result['items'])} item(s) {verb} retried")
