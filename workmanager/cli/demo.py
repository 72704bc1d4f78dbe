"""``workmanager demo`` and ``workmanager agent``: processes that run on Celery.

Nothing under ``workmanager/`` imports Celery, so these commands hand over to the
process entry points in ``workers/`` (same interpreter, same environment).
"""

from __future__ import annotations

import os
import sys

import click

from .app import cli
from .render import TIMEOUT, json_option


def _exec(module: str, args: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--orders", type=click.IntRange(min=1), default=30, show_default=True, help="orders to enqueue"
)
@click.option(
    "--agents", type=click.IntRange(min=1), default=4, show_default=True, help="consumer threads"
)
@click.option("--timeout", type=TIMEOUT, default=240.0, show_default=True, help="seconds to wait")
@json_option
def demo(orders: int, agents: int, timeout: float, as_json: bool) -> None:
    """Run the real pipeline end to end: a Celery worker, agent consumers,
    producers enqueueing, auto-approval and apply, on whatever WORK_MANAGER_* configures
    (by default SQLite and kombu's SQLAlchemy broker: no servers needed)."""
    _exec(
        "workers.demo",
        ["--orders", str(orders), "--agents", str(agents), "--timeout", str(timeout)]
        + (["--json"] if as_json else []),
    )


@cli.command()
@click.option("--type", "order_type", required=True, help="order type to work on")
@click.option("--handler", required=True, help="pkg.mod:callable or pkg.mod:Class")
@click.option("--agent-id", default=None, help="default agent-<host>-<pid>")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="messages worked on at once",
)
@click.option(
    "--pool",
    default="threads",
    show_default=True,
    type=click.Choice(["threads", "prefork", "solo"]),
)
@json_option
def agent(
    order_type: str, handler: str, agent_id: str | None, concurrency: int, pool: str, as_json: bool
) -> None:
    """Run agents as Celery consumers of queue agents.<type>: each leases the item its
    message names, runs --handler on it and submits what it returns."""
    args = [
        "--type",
        order_type,
        "--handler",
        handler,
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
    ]
    if agent_id:
        args += ["--agent-id", agent_id]
    if as_json:
        args.append("--json")
    _exec("workers.agent", args)
