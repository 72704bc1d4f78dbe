"""Upstream's Feature/Http/GlobalCheckoutTest replayed against a real server, as an upstream
agent sends it (no ``X-Lease-Token``, filters in the query string, a tenant in the
payload). The server runs with upstream's concurrency limits set (its tests set them with
``config([...])``): ``WORK_MANAGER_MAX_LEASES_PER_AGENT=2``, ``..._PER_TYPE=1``; the
scenarios use distinct types where upstream had none set. Each test starts from an empty
queue (upstream's RefreshDatabase). ``api_db_url`` and ``tokens`` come from
tests/compat/conftest.py: imported here they would be a second session instance that
recreates the database under the other modules' tokens."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.api.conftest import PREFIX, Server
from tests.compat.conftest import start_upstream
from tests.compat.seeding import Seeder

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def limited(api_db_url: str, tokens: dict[str, str]) -> Iterator[Server]:
    srv = start_upstream(
        api_db_url,
        tokens,
        WORK_MANAGER_MAX_LEASES_PER_AGENT="2",
        WORK_MANAGER_MAX_LEASES_PER_TYPE="1",
    )
    yield srv
    srv.close()


@pytest.fixture
def seed(api_db_url: str, limited: Server) -> Iterator[Seeder]:
    seeder = Seeder(api_db_url)
    seeder.reset()
    yield seeder
    seeder.close()


def propose(srv: Server, type: str = "test.simple", priority: int = 0, **payload: Any) -> str:
    r = srv.client("agent-a", "proposer").post(
        f"{PREFIX}/propose", json={"type": type, "payload": payload, "priority": priority}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["order"]["id"])


def checkout(srv: Server, agent: str = "agent-1", query: str = "") -> httpx.Response:
    return srv.client("agent-a", agent).post(f"{PREFIX}/checkout{query}")


def leased_name(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()["item"]["input"].get("name")


def test_highest_priority_first_then_fifo(limited: Server, seed: Seeder) -> None:
    """'checks out highest priority item across all orders', 'uses FIFO ordering within
    same priority', 'prioritizes highest priority items first' (the item is then leased
    to the agent)."""
    for name, priority in [("low", 10), ("high", 100), ("medium", 50)]:
        propose(limited, "test.simple", priority, name=name)
    r = checkout(limited)
    assert leased_name(r) == "high"
    item = limited.client("admin").get(f"{PREFIX}/orders/{r.json()['item']['order_id']}")
    (leased,) = item.json()["order"]["items"]
    assert leased["state"] == "leased" and leased["leased_by_agent_id"] == "agent-1"
    seed.reset()
    # Same priority: the oldest first, whatever order they were inserted in.
    for name, age in [("third", 1), ("second", 2), ("first", 3)]:
        seed.adjust(propose(limited, "test.multi", 50, count=1), age=timedelta(seconds=age))
        seed.adjust(propose(limited, "test.simple", 50, name=name), age=timedelta(seconds=age))
    assert leased_name(checkout(limited, query="?type=test.simple")) == "first"


def test_filters_type_min_priority_tenant_and_combined(limited: Server, seed: Seeder) -> None:
    """'filters by order type', 'filters by minimum priority', 'filters by tenant_id in
    payload', 'combines multiple filters' (each checkout by another agent: the per-agent
    limit is 2 on this server)."""
    propose(limited, "test.simple", 100, name="echo")
    multi = propose(limited, "test.multi", 50, count=1)
    r = checkout(limited, "agent-t1", "?type=test.multi")
    assert r.json()["item"]["order_id"] == multi and r.json()["item"]["type"] == "test.multi"
    seed.reset()
    for name, priority in [("low", 10), ("medium", 50), ("high", 100)]:
        propose(limited, "test.parts" if name == "medium" else "test.simple", priority, name=name)
    r = checkout(limited, "agent-t2", "?min_priority=50")
    assert leased_name(r) == "high"
    seed.reset()
    propose(limited, "test.simple", 100, tenant_id="tenant-1", name="one")
    propose(limited, "test.simple", 50, tenant_id="tenant-2", name="two")
    assert leased_name(checkout(limited, "agent-t3", "?tenant_id=tenant-2")) == "two"
    seed.reset()
    match = propose(limited, "test.multi", 80, tenant_id="acme", count=1)
    propose(limited, "test.simple", 90, tenant_id="acme", name="wrong-type")
    propose(limited, "test.multi", 85, tenant_id="other", count=1)
    propose(limited, "test.multi", 30, tenant_id="acme", count=1)
    r = checkout(limited, "agent-t4", "?type=test.multi&min_priority=50&tenant_id=acme")
    assert r.status_code == 200 and r.json()["item"]["order_id"] == match


def test_no_items_available(limited: Server, seed: Seeder) -> None:
    """'returns 409 when no items available at all' / 'globally', 'returns 409 when no
    items match filters' (upstream's message too)."""
    r = checkout(limited)
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_items_available"
    propose(limited, "test.simple", 10, name="test")
    r = checkout(limited, query="?type=nonexistent.type")
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "no_items_available"
    assert "matching filters" in error["message"], error


def test_per_agent_and_per_type_concurrency_limits(limited: Server, seed: Seeder) -> None:
    """'respects per-agent concurrency limit' (2: the third is 409, another agent still
    leases) and 'respects per-type concurrency limit' (1). The three orders are of three
    types here, so that the per-type limit of this server does not decide the first."""
    for type, payload in [("test.simple", {}), ("test.multi", {"count": 1}), ("test.parts", {})]:
        propose(limited, type, 0, **payload)
    assert checkout(limited, "agent-1").status_code == 200
    assert checkout(limited, "agent-1").status_code == 200
    third = checkout(limited, "agent-1")
    assert third.status_code == 409 and third.json()["error"]["code"] == "no_items_available"
    assert checkout(limited, "agent-2").status_code == 200
    seed.reset()
    propose(limited, "test.simple", 0, name="one")
    propose(limited, "test.simple", 0, name="two")
    assert checkout(limited, "agent-1", "?type=test.simple").status_code == 200
    second = checkout(limited, "agent-2", "?type=test.simple")
    assert second.status_code == 409 and second.json()["error"]["code"] == "no_items_available"


def test_scoped_checkout_lease_fields_and_query_validation(limited: Server, seed: Seeder) -> None:
    """'maintains backward compatibility with scoped checkout', 'includes lease and
    heartbeat information in response', 'validates query parameters'. The last differs
    by design (docs/migrating.md): a malformed query-string filter is 400
    ``invalid_query`` here, as every bad query parameter (SPEC §6.1); upstream: 422."""
    order_id = propose(limited, "test.simple", 0, name="test")
    r = limited.client("agent-a", "agent-1").post(f"{PREFIX}/orders/{order_id}/checkout")
    assert leased_name(r) == "test"
    item = r.json()["item"]
    assert {"id", "type", "input", "lease_expires_at", "heartbeat_every_seconds"} <= set(item)
    assert item["heartbeat_every_seconds"] == 120  # the configured default, as upstream's
    r = checkout(limited, query="?min_priority=invalid")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query", r.text
