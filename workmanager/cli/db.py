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
    from ..db.migrate import current, head, known, upgrade  # alembic: only this command

    upgrade(env.wm.db)
    revision = current(env.wm.db)
    url = display_url(env.wm.settings.database_url)
    said = f"database at revision {revision}"
    if revision is not None and not known(revision):
        said += f" (newer than this code's {head()}: migrated by newer code, left as it is)"
    emit({"revision": revision, "database_url": url}, as_json, said)
