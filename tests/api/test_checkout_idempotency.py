"""Checkout honours WORK_MANAGER_IDEMPOTENCY_ENFORCE_ON when an operator adds it there."""

from __future__ import annotations

import pytest

from tests.api.conftest import PREFIX, idem, propose, start_server

pytestmark = pytest.mark.postgres


def test_checkout_enforced_requires_a_key_and_replays_the_same_lease(api_db_url, tokens) -> None:
    srv = start_server(
        api_db_url, tokens, "database", None, WORK_MANAGER_IDEMPOTENCY_ENFORCE_ON="propose,checkout"
    )
    try:
        with srv.client(agent="agent-1") as client:
            order = propose(client)
            missing = client.post(PREFIX + "/checkout", json={})
            assert missing.status_code == 428
            assert missing.json()["error"]["code"] == "idempotency_key_required"
            key = idem()
            first = client.post(PREFIX + "/checkout", json={}, headers=key)
            again = client.post(PREFIX + "/checkout", json={}, headers=key)
            assert first.status_code == again.status_code == 200
            assert again.headers.get("Idempotent-Replayed") == "true"
            assert again.json() == first.json()
            scoped = client.post(f"{PREFIX}/orders/{order['id']}/checkout", headers=idem())
            assert scoped.status_code == 409  # the only item is already leased
            # an audit pass: the same key on /orders/global/checkout met the global
            # checkout's stored key (its target is "global"): 422, not the 404 it is
            named = client.post(f"{PREFIX}/orders/global/checkout", headers=key)
            assert named.status_code == 404, named.text
            assert named.json()["error"]["code"] == "not_found"
    finally:
        srv.close()


def test_the_client_keys_its_bare_heartbeats_when_a_server_requires_it(api_db_url, tokens) -> None:
    """``WorkClient`` sends a bare heartbeat without a key; a server that requires keys on
    heartbeats (428) gets the beat again with one, and the lease is kept."""
    from workmanager.client import WorkClient

    srv = start_server(
        api_db_url, tokens, "database", None, WORK_MANAGER_IDEMPOTENCY_ENFORCE_ON="heartbeat"
    )
    try:
        with WorkClient(srv.url, tokens["agent-a"], "client-agent-11") as wc:
            order = wc.propose("test.simple", {})
            lease = wc.checkout(order["id"], heartbeat=False)
            assert lease is not None
            sent: list[int] = []
            wc.http.event_hooks["response"].append(lambda r: sent.append(r.status_code))
            assert lease.heartbeat()["lease_expires_at"]
            assert lease.heartbeat()["lease_expires_at"]
            assert sent == [428, 200, 200]  # told once (a 428 each beat spent the rate limit)
            lease.release()
    finally:
        srv.close()
