"""``workmanager leases list|reclaim|release|extend`` by selector (SPEC §9, §13).

The selector rule (the refusal of an empty one, and reclaim's "no selector: the expired
leases") lives in ``services.lease_admin``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..durations import MAX_SECONDS
from ..errors import InvalidQuery, Unavailable
from ..reads.leases import LeaseSelector
from ..services.lease_admin import DEFAULT_EXTEND_SECONDS, LeaseAdmin, LeaseAdminResult
from .app import Env, cli, pass_env
from .render import DURATION, emit_json, json_option, report_error, table

F = TypeVar("F", bound=Callable[..., Any])
COLUMNS = ("item_id", "order_type", "agent_id", "lease_token", "lease_expires_at", "attempts")


def selectors(fn: F) -> F:
    """The options every lease command takes."""
    for option in reversed(
        [
            click.option("--agent", "agent_id", default=None, help="leases held by this agent"),
            click.option("--order", "order_id", type=click.UUID, default=None),
            click.option("--type", "order_type", default=None, help="order type"),
            click.option(
                "--older-than", type=DURATION, default=None, help="granted longer ago, e.g. 2h"
            ),
            click.option("--all", "select_all", is_flag=True, help="every held lease"),
        ]
    ):
        fn = option(fn)
    return fn


def _selector(kw: dict[str, Any], required: bool = True) -> LeaseSelector:
    selector = LeaseSelector(
        agent_id=kw.pop("agent_id"),
        order_id=kw.pop("order_id"),
        order_type=kw.pop("order_type"),
        older_than=kw.pop("older_than"),
        all=kw.pop("select_all"),
        expired=kw.pop("expired", False),
    )
    try:
        if required:
            selector.require()
    except InvalidQuery as exc:
        raise click.UsageError(
            f"{exc.message} (use --agent, --order, --type, --older-than or --all)"
        ) from exc
    return selector


@cli.group()
def leases() -> None:
    """Administer held leases, chosen by --agent --order --type --older-than or --all."""


@leases.command("list")
@selectors
@json_option
@pass_env
def list_leases(env: Env, /, as_json: bool, **kw: Any) -> None:
    """Held leases (all of them when no selector is given)."""
    rows = LeaseAdmin(env.wm.ctx).held(_selector(kw, required=False))
    if as_json:
        emit_json(rows)
    else:
        table(rows, ("order_id", "state", *COLUMNS), title=f"held leases ({len(rows)})")


def _report(result: LeaseAdminResult, as_json: bool) -> None:
    """The report (a table and counts, or JSON); exit 1 after it, with an error line on
    stderr, when a lease was left as it was because a service was unavailable (the
    operator must run it again)."""
    if as_json:
        emit_json(result.to_dict())
    else:
        _print_report(result)
    unavailable = [c for c in result.changes if _reason_code(c) == "unavailable"]
    if unavailable:
        first = str(unavailable[0]["reason"]).partition(": ")[2]
        report_error(
            Unavailable(
                f"{len(unavailable)} lease(s) were not {_PAST[result.action]}: {first}",
                details={"item_ids": [c["item_id"] for c in unavailable]},
                hint="is the lease backend up? check WORK_MANAGER_REDIS_URL, then run the "
                "command again",
            )
        )
        click.get_current_context().exit(1)


_PAST = {"extend": "extended", "release": "released", "reclaim": "reclaimed"}


def _reason_code(change: dict[str, Any]) -> str:
    """The error code a skipped lease's ``reason`` starts with (``code: message``)."""
    return str(change.get("reason") or "").partition(":")[0]


def _print_report(result: LeaseAdminResult) -> None:
    reasons = ("reason",) if any(c.get("reason") for c in result.changes) else ()
    extra = ("new_lease_expires_at", "reason") if result.action == "extend" else reasons
    title = f"{result.action}{' (dry run: nothing changed)' if result.dry_run else ''}"
    table(result.changes, (*COLUMNS, "outcome", *extra), title=title, empty="no lease matched")
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(result.counts().items()))
    verb = "would be" if result.dry_run else "were"
    click.echo(f"{len(result.changes)} lease(s) {verb} touched" + (f": {counts}" if counts else ""))


dry_run_option = click.option(
    "--dry-run", is_flag=True, help="show what would change, change nothing"
)


@leases.command("reclaim")
@selectors
@click.option(
    "--expired", is_flag=True, help="only leases past their expiry (the default with no selector)"
)
@dry_run_option
@json_option
@pass_env
def reclaim(env: Env, /, dry_run: bool, as_json: bool, **kw: Any) -> None:
    """Reclaim leases as the sweep does: requeued with backoff, or failed when their
    attempts are spent. With no selector, the expired leases (event lease_expired), as
    upstream's lease:reclaim; selectors end the leases they name now."""
    admin = LeaseAdmin(env.console.ctx, env.actor)
    _report(admin.reclaim(_selector(kw, required=False), dry_run=dry_run), as_json)


@leases.command("release")
@selectors
@dry_run_option
@json_option
@pass_env
def release(env: Env, /, dry_run: bool, as_json: bool, **kw: Any) -> None:
    """End the leases now and give the attempt back; the items are leasable at once."""
    admin = LeaseAdmin(env.console.ctx, env.actor)
    _report(admin.release(_selector(kw), dry_run=dry_run), as_json)


@leases.command("extend")
@selectors
@click.option(
    "--seconds",
    "--ttl",
    "seconds",
    type=click.IntRange(1, MAX_SECONDS),
    default=DEFAULT_EXTEND_SECONDS,
    show_default=True,
    help="seconds added to each lease's current expiry (upstream's --ttl set it to now + ttl)",
)
@dry_run_option
@json_option
@pass_env
def extend(env: Env, /, seconds: int, dry_run: bool, as_json: bool, **kw: Any) -> None:
    """Push each live lease's expiry out by --seconds."""
    admin = LeaseAdmin(env.console.ctx, env.actor)
    _report(admin.extend(_selector(kw), seconds, dry_run=dry_run), as_json)
