"""``workmanager provenance forget``: the right to be forgotten (``services/forget.py``)."""

from __future__ import annotations

from typing import Any

import click

from ..services.forget import Forget, Subject
from .app import Env, cli, pass_env
from .render import emit_json, json_option, table


@cli.group()
def provenance() -> None:
    """Provenance records: who did what."""


@provenance.command("forget")
@click.option("--agent", "agent_id", default=None, help="erase this agent id")
@click.option("--user", "user_id", default=None, help="erase this user (token name) id")
@click.option("--dry-run", is_flag=True, help="count what would change, change nothing")
@json_option
@pass_env
def forget(
    env: Env, agent_id: str | None, user_id: str | None, dry_run: bool, as_json: bool
) -> None:
    """Erase an agent's or a user's id from every record: provenance anonymised, event
    actors pseudonymised, its tokens revoked; payloads untouched; one audit event (without
    the id). Refused while the agent holds live leases."""
    if (agent_id is None) == (user_id is None):
        raise click.UsageError("give exactly one of --agent ID or --user ID")
    subject = Subject("agent", agent_id) if agent_id is not None else Subject("user", user_id or "")
    answer = Forget(env.wm.ctx).forget(subject, env.actor, dry_run=dry_run)
    if as_json:
        emit_json(answer)
        return
    _report(answer)


def _report(answer: dict[str, Any]) -> None:
    verb = "would change (dry run: nothing changed)" if answer["dry_run"] else "changed"
    rows = [{"record": name, "rows": count} for name, count in answer["counts"].items()]
    table(rows, ("record", "rows"), title=f"forgetting the {answer['subject']}: rows {verb}")
    if answer["live_leases"]:
        click.echo(f"the {answer['subject']} holds {answer['live_leases']} live lease(s)")
