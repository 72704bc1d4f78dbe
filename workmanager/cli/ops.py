"""``workmanager ops check|tail|prune|purge-keys|restored`` (SPEC §9)."""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import timedelta
from functools import partial
from typing import Any

import click

from ..services.housekeeping import MAX_TAIL, Housekeeping, PruneReport
from .app import Env, cli, pass_env
from .render import (
    DURATION,
    INTERVAL,
    TIMEOUT,
    console,
    emit,
    emit_json,
    json_option,
    pairs,
    progress_bar,
)


@cli.group()
def ops() -> None:
    """Health, the event log and housekeeping."""


@ops.command("check")
@json_option
@pass_env
def check(env: Env, as_json: bool) -> None:
    """Which database (its URL, password masked), database, broker and Redis reachability,
    and counts by state. Exit 1 when a component in use is down."""
    report = Housekeeping(env.wm.ctx).check()
    if as_json:
        emit_json(report)
    else:
        click.echo(f"database: {report['database_url']}")
        pairs(report["components"], list(report["components"]), title="components")
        for key in ("orders", "items", "leases"):
            if key in report:
                pairs(report[key], list(report[key]) or ["-"], title=key)
        click.echo("ok" if report["ok"] else "NOT OK")
    if not report["ok"]:
        sys.exit(1)


def _line(event: dict[str, Any]) -> str:
    item = f" item={event['item_id']}" if event["item_id"] else ""
    payload = f" {json.dumps(event['payload'], default=str)}" if event["payload"] else ""
    actor = f"{event['actor_type']}:{event['actor_id']}"
    head = f"{event['created_at']} #{event['id']} {event['event']} order={event['order_id']}"
    return f"{head}{item} by {actor}{payload}"


def _print(events: list[dict[str, Any]], as_json: bool) -> None:
    for event in events:
        click.echo(json.dumps(event, default=str) if as_json else _line(event))


@ops.command("tail")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(0, MAX_TAIL),
    default=20,
    show_default=True,
    help="latest events to show",
)
@click.option("--order", "order_id", type=click.UUID, default=None, help="one order's events")
@click.option("--item", "item_id", type=click.UUID, default=None, help="one item's events")
@click.option("--event", "event_name", default=None, help="one event name, e.g. lease_expired")
@click.option("--follow", "-f", is_flag=True, help="keep printing new events")
@click.option(
    "--interval", type=INTERVAL, default=1.0, show_default=True, help="seconds between polls"
)
@click.option("--timeout", default=None, type=TIMEOUT, help="stop following after this long")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@pass_env
def tail(
    env: Env,
    limit: int,
    order_id: uuid.UUID | None,
    item_id: uuid.UUID | None,
    event_name: str | None,
    follow: bool,
    interval: float,
    timeout: float | None,
    as_json: bool,
) -> None:
    """The event log, newest last (--order, --item and --event narrow it)."""
    if timeout is not None and not follow:
        raise click.UsageError("--timeout is for --follow: add --follow, or drop --timeout")
    house = Housekeeping(env.wm.ctx)
    where = partial(house.tail, order_id=order_id, item_id=item_id, event=event_name)
    events = where(limit=limit)
    _print(events, as_json)
    if not follow:
        return
    last = events[-1]["id"] if events else house.last_event_id()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while deadline is None or time.monotonic() < deadline:
            # never past the deadline: --interval 30 --timeout 1 ran 31 s
            left = interval if deadline is None else deadline - time.monotonic()
            time.sleep(max(0.0, min(interval, left)))
            new = where(limit=1000, after_id=last)
            _print(new, as_json)
            last = new[-1]["id"] if new else last
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass


def _pruned(report: PruneReport) -> str:
    return (
        f"{report.orders} order(s) and {report.items} item(s) last changed before "
        f"{report.cutoff} (with their own events and provenance), and of the orders kept"
        f" {report.events} event(s) and {report.provenance} provenance record(s) written"
        " before it"
    )


@ops.command("prune")
@click.option("--older-than", type=DURATION, default="90d", show_default=True, help="e.g. 90d")
@click.option("--dry-run", is_flag=True, help="count what would go; delete nothing")
@click.option("--yes", "-y", is_flag=True, help="delete without asking")
@json_option
@pass_env
def prune(env: Env, older_than: timedelta, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Delete completed and dead-lettered orders older than that, with their items, parts,
    events and provenance, and the events and provenance written before then of the
    other completed and dead-lettered orders (as upstream's ops:prune); an order that can
    still change keeps its whole history. Asks first (on stderr) unless --yes or
    --dry-run."""
    house = Housekeeping(env.wm.ctx)
    if not dry_run and not yes:
        found = house.prune(older_than, dry_run=True)
        if found.total and not click.confirm(f"Delete {_pruned(found)}?", err=True):
            raise click.Abort()
    with progress_bar("counting" if dry_run else "pruning") as update:
        report = house.prune(older_than, dry_run=dry_run, progress=update)
    if as_json:
        emit_json(report.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    console().print(f"{verb} {_pruned(report)}")


@ops.command("purge-keys")
@click.option("--older-than", type=DURATION, default="30d", show_default=True, help="e.g. 30d")
@click.option("--dry-run", is_flag=True, help="count them; delete nothing")
@click.option("--force", is_flag=True, help="also keys younger than their TTL")
@json_option
@pass_env
def purge_keys(env: Env, older_than: timedelta, dry_run: bool, force: bool, as_json: bool) -> None:
    """Delete idempotency keys created longer ago than that (none still in flight).

    A key whose answer is younger than WORK_MANAGER_IDEMPOTENCY_TTL_HOURS still answers
    its retries: purging it lets a retry run again (a second order), so such keys are
    kept, and a cutoff younger than the TTL is refused, unless --force."""
    ttl = timedelta(hours=env.settings.idempotency_ttl_hours)
    if older_than < ttl and not force:
        raise click.BadParameter(
            f"keys younger than the idempotency TTL ({env.settings.idempotency_ttl_hours:g}h,"
            " WORK_MANAGER_IDEMPOTENCY_TTL_HOURS) still answer retries; purged, a"
            " retry would run again. Use a longer cutoff, or --force",
            param_hint="--older-than",
        )
    cutoff = env.wm.ctx.clock() - older_than
    count = env.wm.idempotency.purge(cutoff, dry_run=dry_run, force=force)
    verb = "would purge" if dry_run else "purged"
    emit({"purged": count, "dry_run": dry_run}, as_json, f"{verb} {count} idempotency key(s)")


#: How far ``ops restored`` raises the fencing tokens: above every grant an item can have
#: had since the backup (a grant each lease TTL for years).
FENCE_GAP = 1_000_000


@ops.command("restored")
@click.option(
    "--fence-gap",
    type=click.IntRange(1, 10**12),
    default=FENCE_GAP,
    show_default=True,
    help="how far to raise every item's fencing token",
)
@click.option("--yes", "-y", is_flag=True, help="do it without asking")
@json_option
@pass_env
def restored(env: Env, fence_gap: int, yes: bool, as_json: bool) -> None:
    """After restoring the database from a backup: raise every item's fencing token, so
    that no token granted since the backup is accepted or granted again
    (docs/operations.md, "Restoring from a backup"). Asks first unless --yes."""
    if not yes and not click.confirm(
        f"Raise the fencing token of every item by {fence_gap}? Every lease granted before"
        " is refused from its next call that reaches the database",
        err=True,
    ):
        raise click.Abort()
    count = Housekeeping(env.wm.ctx).restored(fence_gap)
    # a lock store's locks carry the tokens from before: a bare heartbeat touched only
    # them (an old holder heartbeated on) and an operator's release could not drop them
    locks = env.wm.ctx.leases.forget_locks()
    said = f"raised the fencing tokens of {count} item(s) by {fence_gap}"
    if locks:
        said += f"; forgot {locks} key(s) of the lease store (its locks and limit counters)"
    emit({"items": count, "fence_gap": fence_gap, "locks_forgotten": locks}, as_json, said)
