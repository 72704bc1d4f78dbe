"""``workmanager tokens list|revoke``; a revoked token is refused at once."""

from __future__ import annotations

import json

from tests.api.conftest import PREFIX, Server, base_env, cli


def test_list_and_revoke(db_server: Server, api_db_url: str) -> None:
    env = base_env(api_db_url)
    made = cli(env, "tokens", "create", "--name", "temp", "--scopes", "view", "--agent", "x-1")
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("wm_") and token not in made.stderr
    listed = json.loads(cli(env, "tokens", "list", "--json").stdout)
    temp = next(t for t in listed if t["name"] == "temp")
    assert temp["scopes"] == ["view"] and temp["agent_id"] == "x-1"
    assert token not in json.dumps(listed)
    client = db_server.client(token)
    assert client.get(f"{PREFIX}/orders").status_code == 200
    assert cli(env, "tokens", "revoke", "temp").returncode == 0
    r = client.get(f"{PREFIX}/orders")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    bad = cli(env, "tokens", "create", "--name", "t2", "--scopes", "view,root")
    assert bad.returncode != 0 and "scopes" in bad.stderr
    # a revoked token's name stays taken: said so, with what to do (a walk-through run
    # twice left TOKEN empty, and every call after answered 401)
    again = cli(env, "tokens", "create", "--name", "temp", "--scopes", "view")
    assert again.returncode == 1 and again.stdout == ""
    assert "a token named 'temp' exists (a revoked token keeps its name): choose another" in (
        again.stderr
    )


def test_create_a_tenant_bound_token(db_server: Server, api_db_url: str) -> None:
    """``tokens create --tenant T``: listed with its tenant, and its proposals land in T."""
    env = base_env(api_db_url)
    args = ("--name", "tenant-cli", "--scopes", "view,propose", "--tenant", "acme-cli")
    made = json.loads(cli(env, "tokens", "create", *args, "--json").stdout)
    assert made["tenant_id"] == "acme-cli" and made["token"].startswith("wm_")
    listed = json.loads(cli(env, "tokens", "list", "--json").stdout)
    assert next(t for t in listed if t["name"] == "tenant-cli")["tenant_id"] == "acme-cli"
    assert "acme-cli" in cli(env, "tokens", "list").stdout
    client = db_server.client(made["token"])
    body = {"type": "test.simple", "payload": {}}
    proposed = client.post(f"{PREFIX}/propose", json=body, headers={"Idempotency-Key": "t-1"})
    assert proposed.status_code == 201, proposed.text
    shown = client.get(f"{PREFIX}/orders/{proposed.json()['order']['id']}").json()["order"]
    assert shown["tenant_id"] == "acme-cli"
    assert {i["tenant_id"] for i in shown["items"]} == {"acme-cli"}
