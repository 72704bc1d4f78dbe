"""``workmanager dev seed|reset`` and ``workmanager make order-type`` (SPEC §9)."""

from __future__ import annotations

import os

import click

from ..scaffold import class_name, order_type_module
from ..services.devtools import DevTools
from .app import Env, cli, pass_env
from .render import emit_json, json_object, json_option, progress_bar, table


@cli.group()
def dev() -> None:
    """Development helpers: seed orders, wipe the database."""


@dev.command("seed")
@click.option("--type", "order_type", required=True, help="a registered order type")
@click.option("--count", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--payload", default="{}", show_default=True, help="JSON object for every order")
@click.option("--priority", default=0, show_default=True)
@json_option
@pass_env
def seed(env: Env, order_type: str, count: int, payload: str, priority: int, as_json: bool) -> None:
    """Propose COUNT orders of a type (validated and planned like any other)."""
    tools = DevTools(env.console.ctx, env.console.orders)
    body = json_object(payload, env.settings.max_json_depth, "--payload")
    with progress_bar(f"seeding {order_type}", total=count) as update:
        ids = tools.seed(order_type, count, body, priority=priority, progress=update)
    if as_json:
        emit_json({"type": order_type, "created": [str(i) for i in ids]})
    else:
        click.echo(f"seeded {len(ids)} {order_type} order(s)")


@dev.command("reset")
@click.option("--force", is_flag=True, help="yes, delete every row")
@json_option
@pass_env
def reset(env: Env, force: bool, as_json: bool) -> None:
    """Delete every order, item, event, token and key (the schema stays). Needs --force."""
    if not force:
        raise click.UsageError(
            f"dev reset deletes every row in {env.settings.database_url}; "
            "run it again with --force to do that"
        )
    deleted = DevTools(env.wm.ctx, env.wm.orders).reset()
    if as_json:
        emit_json({"deleted": deleted})
    else:
        rows = [{"table": t, "rows deleted": n} for t, n in deleted.items()]
        table(rows, ("table", "rows deleted"), title="reset")


@cli.group()
def make() -> None:
    """Generate skeleton code."""


@make.command("order-type")
@click.argument("name")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="file")
@click.option("--force", is_flag=True, help="overwrite an existing file")
@json_option
def make_order_type(name: str, output: str | None, force: bool, as_json: bool) -> None:
    """A module with an OrderType subclass for NAME (schema, plan, result_schema, apply and
    register), printed or written to --output."""
    source = order_type_module(name)
    if output is not None:
        if os.path.exists(output) and not force:
            raise click.UsageError(f"{output} exists; pass --force to overwrite it")
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(source)
    if as_json:
        emit_json({"type": name, "class": class_name(name), "output": output, "source": source})
    elif output is None:
        click.echo(source, nl=False)
    else:
        click.echo(f"wrote {class_name(name)} ({name}) to {output}", err=True)
