"""A lease ended by a process that keeps no lease limits gives its place back in the
counts the limited processes keep (the Redis lock store)."""

from __future__ import annotations

import uuid

import pytest

from workmanager.lease_tokens import new_secret
from workmanager.leases.redis import RedisLeaseStore, connect

pytestmark = pytest.mark.redis


def test_a_release_by_an_unlimited_process_frees_the_agents_place(redis_url: str) -> None:
    """An MCP pass: a dead-letter run (or an operator's release) in a process without
    ``MAX_LEASES_PER_AGENT`` ended a lease but left it in the agent's count, so the
    agent was told "no items" for the rest of the old lease's TTL."""
    prefix = f"wmtest:{uuid.uuid4().hex[:8]}:"
    client = connect(redis_url)
    limited = RedisLeaseStore(client, prefix, track_limits=True)
    unlimited = RedisLeaseStore(client, prefix, track_limits=False)
    _, secret_hash = new_secret()
    item = str(uuid.uuid4())
    try:
        token = limited.acquire(item, "agent-1", 600_000, 1, "t", 1, 0, secret_hash)
        assert token == 1 and limited.holding("agent-1") == 1
        proof = f"{token}|{secret_hash}"
        assert unlimited.release(item, "agent-1", proof, "t") == 1
        assert limited.holding("agent-1") == 0
        other = str(uuid.uuid4())  # the agent's place is free: its next grant is taken
        assert limited.acquire(other, "agent-1", 600_000, 1, "t", 1, 0, secret_hash) == 1
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()
