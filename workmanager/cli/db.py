"""``workmanager db upgrade``."""

from __future__ import annotations

from typing import Any

import click

from ..db.session import display_url
from ..errors import ConfigurationError, WorkManagerError
from .app import Env, cli, pass_env
from .render import emit, json_option


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option(
    "--record-settings",
    is_flag=True,
    help="record this shell's shared settings (lease backend and TTL, Redis prefix, queue"
    " names) as the deployment's, replacing the record: how they are changed",
)
@json_option
@pass_env
def db_upgrade(env: Env, record_settings: bool, as_json: bool) -> None:
    """Create or migrate the schema (idempotent). The settings every process must share
    are recorded when nothing is yet; a record that differs from this shell's is left
    as it is (said on stderr) unless --record-settings."""
    from .. import deployment
    from ..db.migrate import current, head, known, upgrade  # alembic: only this command
    from ..deployment import described

    upgrade(env.wm.db)
    revision = current(env.wm.db)
    url = display_url(env.wm.settings.database_url)
    said = f"database: {url}\ndatabase at revision {revision}"  # which one, as ops check
    if revision is not None and not known(revision):
        said += f" (newer than this code's {head()}: migrated by newer code, left as it is)"
    # the settings every process must share: recorded when asked, or when none are
    if record_settings:
        recorded = deployment.read(env.wm.db)
        forgotten = _forget_earlier_locks(env)
        if forgotten is not None:
            said += (
                f"\nlease locks: {forgotten} key(s) of an earlier period under"
                f" {env.wm.settings.redis_prefix!r} deleted; the first sweep checks every held"
                " lease"
            )
        said += _carry_leases(env, recorded.value if recorded is not None else None)
        changed = deployment.record(env.wm.db, env.wm.settings)
        for difference in changed:
            then = (  # what waits in the old queue is read by nobody once all have moved
                "drain the old queue, then restart every process with it:"
                " docs/configuration.md#settings-every-process-shares"
                if "queue" in difference.name
                else "restart every process with it"
            )
            said += (
                f"\nrecorded {deployment.variable(difference.name)}: {difference.recorded!r}"
                f" -> {difference.here!r} ({then})"
            )
    else:
        changed = []
        try:
            # a shell's clock judges nothing here: the processes check their own
            if deployment.check(env.wm.db, env.wm.settings, clock=False):  # the first: said
                said += f"\nrecorded the deployment's settings: {described(env.wm.settings)}"
        except ConfigurationError as exc:  # this shell's mistake, or a change not asked for
            click.echo(
                f"warning: {exc.message}; left as recorded (`workmanager db upgrade"
                " --record-settings` records this shell's)",
                err=True,
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


def _carry_leases(env: Env, recorded: dict[str, Any] | None) -> str:
    """A switch between the database and Redis backends: the held leases carried to the
    new one (:mod:`workmanager.leases.switch`), said in a line; "" for another change."""
    import dataclasses

    from ..leases import switch
    from ..leases.factory import build_lease_backend

    settings = env.wm.settings
    before = (recorded or {}).get("lease_backend")
    if (before, settings.lease_backend) == ("database", "redis"):
        lock = env.wm.ctx.leases.lock
        assert lock is not None
        carried = switch.into_locks(env.wm.db, lock, env.wm.ctx.clock())
        return f"\nleases held: {carried} locked in Redis under their rows' fences"
    if (before, settings.lease_backend) != ("redis", "database"):
        return ""
    assert recorded is not None
    earlier = dataclasses.replace(
        settings,
        lease_backend="redis",
        redis_prefix=recorded.get("redis_prefix", settings.redis_prefix),
        redis_cluster=bool(recorded.get("redis_cluster", settings.redis_cluster)),
    )
    try:
        lock = build_lease_backend(earlier).lock
        assert lock is not None
        carried = switch.into_rows(env.wm.db, lock)
    except WorkManagerError as exc:  # Redis away: the rows' expiries stay as they were
        return (
            f"\nleases held: their Redis locks could not be read ({exc.message}); each ends"
            " at its row's expiry, which lags its heartbeats: stop the agents first, or"
            " run this again with WORK_MANAGER_REDIS_URL set to that Redis"
        )
    return f"\nleases held: {carried} row expiries brought up to their Redis locks' ends"


#: What, changed in the record, makes the Redis lock store's keys another period's.
LOCK_STORE = ("lease_backend", "redis_prefix", "redis_cluster")


def _forget_earlier_locks(env: Env) -> int | None:
    """Before a switch to the Redis lease backend (or to another prefix or cluster) is
    recorded: the keys under the new prefix are from an earlier period (every process
    stopped, as the switch asks), and a lock left there (one released since under the
    database backend) refused the lease granted since, and its item. They are deleted,
    and the marker with them, so the first sweep checks every held lease. ``None`` when
    it is not such a switch."""
    from .. import deployment

    settings = env.wm.settings
    row = deployment.read(env.wm.db)
    if settings.lease_backend != "redis" or row is None:
        return None
    changed = deployment.differences(deployment.shared(settings), row.value)
    if not any(difference.name in LOCK_STORE for difference in changed):
        return None
    return env.wm.ctx.leases.forget_locks()
