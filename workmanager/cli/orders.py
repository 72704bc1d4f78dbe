"""``workmanager orders …``: a first slice of the operator console (SPEC §9)."""

from __future__ import annotations

import json
import uuid

import click

from ..types import Actor
from .app import Env, cli, pass_env


@cli.group()
def orders() -> None:
    """Inspect and steer orders."""


@orders.command("show")
@click.argument("order_id", type=click.UUID)
@pass_env
def show(env: Env, order_id: uuid.UUID) -> None:
    """Print an order with its items and latest events as JSON."""
    click.echo(json.dumps(env.wm.queries.order(order_id), indent=2, default=str))


@orders.command("retry")
@click.argument("order_id", type=click.UUID)
@pass_env
def retry(env: Env, order_id: uuid.UUID) -> None:
    """Put a failed order (and its failed items) back to work."""
    order = env.wm.orders.retry(order_id, Actor("user", "cli"))
    click.echo(f"{order['id']} {order['state']}")
