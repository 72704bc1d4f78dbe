"""``workmanager tokens create|list|revoke`` (SPEC §6.4)."""

from __future__ import annotations

import json

import click

from ..services.tokens import SCOPES, TokenService
from .app import Env, cli, pass_env


@cli.group()
def tokens() -> None:
    """API tokens for the HTTP API and the MCP server."""


@tokens.command("create")
@click.option("--name", required=True, help="unique name; recorded as the principal")
@click.option("--agent", "agent_id", default=None, help="bind the token to this agent id")
@click.option("--scopes", required=True, help=f"comma list of: {','.join(SCOPES)}")
@pass_env
def create(env: Env, name: str, agent_id: str | None, scopes: str) -> None:
    """Create a token and print it, alone on the last line. It is shown only this once."""
    token, row = TokenService(env.wm.ctx).create(name, scopes, agent_id)
    click.echo(f"created token {row['name']!r} scopes={','.join(row['scopes'])}", err=True)
    click.echo(token)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts")
@pass_env
def list_tokens(env: Env, as_json: bool) -> None:
    """List tokens (never their values)."""
    rows = TokenService(env.wm.ctx).list()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = "revoked" if r["revoked_at"] else "active"
        agent = r["agent_id"] or "-"
        click.echo(f"{r['name']}\t{state}\tagent={agent}\tscopes={','.join(r['scopes'])}")


@tokens.command("revoke")
@click.argument("name")
@pass_env
def revoke(env: Env, name: str) -> None:
    """Revoke a token by name; it is refused from then on."""
    row = TokenService(env.wm.ctx).revoke(name)
    click.echo(f"revoked {row['name']}")
