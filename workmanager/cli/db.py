"""``workmanager db upgrade``."""

from __future__ import annotations

from ..db.session import display_url
from .app import Env, cli, pass_env
from .render import emit, json_option


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@json_option
@pass_env
def db_upgrade(env: Env, as_json: bool) -> None:
    """Create or migrate the schema (idempotent)."""
    from ..db.migrate import current, upgrade  # alembic: only this command needs it

    upgrade(env.wm.db)
    revision = current(env.wm.db)
    url = display_url(env.wm.settings.database_url)
    emit({"revision": revision, "database_url": url}, as_json, f"database at revision {revision}")
