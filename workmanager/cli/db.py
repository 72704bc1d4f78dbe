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
    from .. import deployment
    from ..db.migrate import current, head, known, upgrade  # alembic: only this command

    upgrade(env.wm.db)
    revision = current(env.wm.db)
    url = display_url(env.wm.settings.database_url)
    said = f"database at revision {revision}"
    if revision is not None and not known(revision):
        said += f" (newer than this code's {head()}: migrated by newer code, left as it is)"
    # the settings every process must share, recorded as this command has them
    changed = deployment.record(env.wm.db, env.wm.settings)
    for difference in changed:
        said += (
            f"\nrecorded {deployment.variable(difference.name)}: {difference.recorded!r} ->"
            f" {difference.here!r} (restart every process with it)"
        )
    shared = deployment.shared(env.wm.settings)
    emit(
        {
            "revision": revision,
            "database_url": url,
            "deployment": shared,
            "changed": [vars(d) for d in changed],
        },
        as_json,
        said,
    )
