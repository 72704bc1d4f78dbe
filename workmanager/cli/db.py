"""``workmanager db upgrade``."""

from __future__ import annotations

import click

from .app import Env, cli, pass_env


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_env
def db_upgrade(env: Env) -> None:
    """Create or migrate the schema (idempotent)."""
    from ..db.migrate import current, upgrade  # alembic: only this command needs it

    upgrade(env.wm.db)
    click.echo(f"database at revision {current(env.wm.db)}")
