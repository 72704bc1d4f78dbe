"""``workmanager db upgrade``."""

from __future__ import annotations

import os

import click

from ..db.embedded import embedded_file
from ..db.session import display_url
from ..errors import ConfigurationError
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
    from ..leases.switch import Carried, carry

    _broker_directory(env.wm.settings.broker_url)  # first: a refusal leaves all as it was
    upgrade(env.wm.db)
    revision = current(env.wm.db)
    url = display_url(env.wm.settings.database_url)
    said = f"database: {url}\ndatabase at revision {revision}"  # which one, as ops check
    if revision is not None and not known(revision):
        said += f" (newer than this code's {head()}: migrated by newer code, left as it is)"
    # the settings every process must share: recorded when asked, or when none are
    carried = Carried()
    if record_settings:
        recorded = deployment.read(env.wm.db)
        ctx = env.wm.ctx
        carried = carry(
            ctx.db, ctx.settings, recorded.value if recorded else None, ctx.leases, ctx.clock
        )
        said += carried.said(env.wm.settings.redis_prefix)
        if carried.warning is not None:
            click.echo(f"warning: {carried.warning}", err=True)
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
            "leases": vars(carried),
        },
        as_json,
        said,
    )


def _broker_directory(broker_url: str) -> None:
    """Make the directory of the embedded broker's file, which its workers open."""
    broker = embedded_file(broker_url)
    if broker is None:
        return
    try:
        os.makedirs(os.path.dirname(broker), exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot make the embedded broker's directory {os.path.dirname(broker)}:"
            f" {exc.strerror or exc}",
            hint=f"WORK_MANAGER_BROKER_URL names {display_url(broker_url)}:"
            " point it at a directory this process can create, or at a running broker",
        ) from exc
