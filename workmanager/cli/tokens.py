"""``workmanager tokens create|list|revoke``."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..services.tokens import SCOPES, TokenService
from .app import Env, cli, pass_env
from .render import CannotWrite, emit, emit_json, json_option, table, written

TOKEN_COLUMNS = ("name", "state", "agent_id", "tenant_id", "scopes", "created_at", "last_used_at")


@cli.group()
def tokens() -> None:
    """API tokens for the HTTP API and the MCP server."""


@tokens.command("create")
@click.option("--name", required=True, help="unique name; recorded as the principal")
@click.option("--agent", "agent_id", default=None, help="bind the token to this agent id")
@click.option("--scopes", required=True, help=f"comma list of: {','.join(SCOPES)}")
@click.option(
    "--tenant",
    "tenant_id",
    default=None,
    help="bind the token to this tenant: it proposes, sees, leases and acts on that "
    "tenant's orders only",
)
@json_option
@pass_env
def create(
    env: Env, name: str, agent_id: str | None, scopes: str, tenant_id: str | None, as_json: bool
) -> None:
    """Create a token and print it, alone on the last line (with --json: under
    ``token``). It is shown only this once."""

    def show(token: str, row: dict[str, Any]) -> None:  # before the commit: never lost unseen
        if as_json:
            emit_json({**row, "token": token})
        else:
            click.echo(token)
        written(sys.stdout)

    try:
        _, row = TokenService(env.wm.ctx).create(name, scopes, agent_id, tenant_id, show)
    except OSError as exc:
        raise CannotWrite(
            f"the token could not be written out ({exc.strerror or exc}); it was not created",
            hint="run it again with its output going where it can be written",
        ) from exc
    if not as_json:
        tenant = f" tenant={row['tenant_id']}" if row["tenant_id"] else ""
        said = f"created token {row['name']!r} scopes={','.join(row['scopes'])}{tenant}"
        click.echo(said, err=True)


@tokens.command("list")
@json_option
@pass_env
def list_tokens(env: Env, as_json: bool) -> None:
    """List tokens (never their values)."""
    rows = TokenService(env.wm.ctx).list()
    if as_json:
        emit_json(rows)
        return
    table([_shown(r) for r in rows], TOKEN_COLUMNS, title="tokens", empty="no tokens")


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    state = "revoked" if row["revoked_at"] else "active"
    return {**row, "state": state, "scopes": ",".join(row["scopes"])}


@tokens.command("revoke")
@click.argument("name")
@json_option
@pass_env
def revoke(env: Env, name: str, as_json: bool) -> None:
    """Revoke a token by name; it is refused from then on."""
    row = TokenService(env.wm.ctx).revoke(name)
    emit(row, as_json, f"revoked {row['name']}")
