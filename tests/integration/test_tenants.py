"""Tenants at the service level (services/tokens.py through Operations), on SQLite and
PostgreSQL: a tenant-bound token proposes into its tenant only, and another tenant's ids
answer exactly as unknown ones (404), lists and checkout narrowed. The same rule over
HTTP and MCP is tests/api/test_tenant_isolation.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.errors import (
    DedupeKeyReused,
    Forbidden,
    NoItemsAvailable,
    NotFound,
)
from workmanager.reads.item_listing import ItemListing
from workmanager.reads.overview import Overview
from workmanager.services.tokens import Principal, TokenService
from workmanager.surface.callers import AgentMetadata, Caller, build_caller
from workmanager.surface.operations import CheckoutFilters, Operations

ALL = frozenset({"admin"})


def caller(tenant: str | None, agent: str = "agent-1") -> Caller:
    return build_caller(Principal(f"token-{tenant}", None, ALL, tenant), AgentMetadata(agent))


@pytest.fixture
def wm(make_wm: Callable[..., WorkManager], database: str) -> WorkManager:
    return make_wm(db=database, backend="database", registry=Registry([Simple()]))


def test_proposals_take_the_tokens_tenant_and_items_inherit_it(wm: WorkManager) -> None:
    ops = Operations(wm)
    _, body = ops.propose(caller("acme"), "test.simple", {"n": 1})
    assert body["order"]["tenant_id"] == "acme"
    _, same = ops.propose(caller("acme"), "test.simple", {"n": 2}, tenant_id="acme")
    assert same["order"]["tenant_id"] == "acme"
    with pytest.raises(Forbidden):
        ops.propose(caller("acme"), "test.simple", {"n": 3}, tenant_id="globex")
    # An unbound caller names any tenant; without one, the payload's key still counts.
    _, named = ops.propose(caller(None), "test.simple", {"n": 4}, tenant_id="globex")
    _, legacy = ops.propose(caller(None), "test.simple", {"n": 5, "tenant_id": "initech"})
    _, none = ops.propose(caller(None), "test.simple", {"n": 6})
    assert named["order"]["tenant_id"] == "globex"
    assert legacy["order"]["tenant_id"] == "initech"
    assert none["order"]["tenant_id"] is None
    for answer, tenant in ((body, "acme"), (named, "globex"), (legacy, "initech")):
        order = wm.queries.order(uuid.UUID(answer["order"]["id"]))
        assert [i["tenant_id"] for i in order["items"]] == [tenant]


def test_a_dedupe_key_of_another_tenant_is_refused_without_its_order(wm: WorkManager) -> None:
    ops = Operations(wm)
    ops.propose(caller("acme"), "test.simple", {"n": 1}, dedupe_key="k1")
    with pytest.raises(DedupeKeyReused) as refused:
        ops.propose(caller("globex"), "test.simple", {"n": 1}, dedupe_key="k1")
    assert "order" not in str(refused.value.to_dict().get("details"))


def _b_world(wm: WorkManager) -> dict[str, Any]:
    """Tenant B's order with a leased item (B's real lease token in hand)."""
    ops = Operations(wm)
    b = caller("globex", "agent-b")
    _, body = ops.propose(b, "test.simple", {"n": 1})
    _, lease = ops.checkout(b, CheckoutFilters())
    return {"order": body["order"]["id"], "item": lease["item"]["id"], "token": lease["item"]}


def test_another_tenants_ids_are_404_everywhere(wm: WorkManager) -> None:
    ops = Operations(wm)
    world = _b_world(wm)
    oid, iid, token = world["order"], world["item"], world["token"]["lease_token"]
    a = caller("acme", "agent-b")  # even naming B's agent id
    before = wm.queries.order(uuid.UUID(oid))
    calls: list[Callable[[], Any]] = [
        lambda: ops.get_order(a, oid),
        lambda: ops.approve(a, oid),
        lambda: ops.reject(a, oid, [{"code": "x", "message": "y"}]),
        lambda: ops.retry(a, oid),
        lambda: ops.checkout(a, CheckoutFilters(), oid),
        lambda: ops.heartbeat(a, iid, token),
        lambda: ops.submit(a, iid, token, {"answer": 1}),
        lambda: ops.submit_part(a, iid, token, "p", {"x": 1}),
        lambda: ops.finalize(a, iid, token),
        lambda: ops.release(a, iid, token),
        lambda: ops.fail(a, iid, token, {"code": "x", "message": "y"}),
        lambda: ops.list_parts(a, iid),
        lambda: ops.logs(a, iid),
        lambda: ops.logs(a, None, order_id=oid),
        lambda: ops.release_lease(a, iid),
        lambda: ops.extend_lease(a, iid, 60),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            call()
    after = wm.queries.order(uuid.UUID(oid))
    assert after["items"] == before["items"] and after["state"] == before["state"]
    # Lists and checkout are narrowed: nothing of B's.
    assert ops.list_orders(a, [])[1]["data"] == []
    assert ops.list_orders(a, [("filter[tenant_id]", "globex")])[1]["meta"]["total"] == 0
    assert ItemListing(wm.ctx).list([], tenant="acme")["data"] == []
    assert Overview(wm.ctx).dashboard(tenant="acme")["orders"] == {}
    assert Overview(wm.ctx).review_queue(tenant="acme")["total"] == 0


def test_checkout_is_narrowed_to_the_tokens_tenant(wm: WorkManager) -> None:
    ops = Operations(wm)
    unbound = caller(None)
    ops.propose(unbound, "test.simple", {"n": 1}, tenant_id="globex")
    a = caller("acme")
    with pytest.raises(NoItemsAvailable):
        ops.checkout(a, CheckoutFilters())
    with pytest.raises(NoItemsAvailable):  # naming B finds nothing either
        ops.checkout(a, CheckoutFilters(tenant_id="globex"))
    _, mine = ops.propose(a, "test.simple", {"n": 2})
    _, lease = ops.checkout(a, CheckoutFilters())
    assert lease["item"]["order_id"] == mine["order"]["id"]
    # Once leased, the item is the holder's to work as usual.
    ops.submit(a, lease["item"]["id"], lease["item"]["lease_token"], {"answer": 1})
    _, listed = ops.list_orders(a, [])
    assert [o["id"] for o in listed["data"]] == [mine["order"]["id"]]
    # An unbound token sees both, and filters by tenant.
    _, both = ops.list_orders(unbound, [("filter[tenant_id]", "acme,globex")])
    assert both["meta"]["total"] == 2
    _, only = ops.list_orders(unbound, [("filter[tenant_id]", "acme")])
    assert [o["id"] for o in only["data"]] == [mine["order"]["id"]]


def test_tokens_carry_their_tenant(wm: WorkManager) -> None:
    tokens = TokenService(wm.ctx)
    plain, row = tokens.create("t-acme", "view,propose", tenant_id="acme")
    assert row["tenant_id"] == "acme"
    assert tokens.authenticate(plain).tenant_id == "acme"
    assert [r["tenant_id"] for r in tokens.list()] == ["acme"]


def test_one_agent_id_is_bound_in_one_tenant(wm: WorkManager) -> None:
    """A tenant audit: a token of tenant B could be bound to an agent id a token of
    tenant A was bound to, and both acted as that agent (one lease limit, one rate bucket,
    one provenance trail for two tenants). Refused; a second token of the same tenant (a
    rotation) is not, nor is the id once the other tenant's token is revoked."""
    from workmanager.errors import ValidationFailed

    tokens = TokenService(wm.ctx)
    tokens.create("worker-a", "view", agent_id="bound-1", tenant_id="A")
    tokens.create("worker-a2", "view", agent_id="bound-1", tenant_id="A")  # a rotation
    with pytest.raises(ValidationFailed) as refused:
        tokens.create("worker-b", "view", agent_id="bound-1", tenant_id="B")
    assert "bound to a token of another tenant" in str(refused.value.details)
    with pytest.raises(ValidationFailed):
        tokens.create("operator", "view", agent_id="bound-1")  # no tenant: another one
    assert [r["name"] for r in tokens.list()] == ["worker-a", "worker-a2"]
    tokens.revoke("worker-a")
    tokens.revoke("worker-a2")
    tokens.create("worker-b", "view", agent_id="bound-1", tenant_id="B")
    # a token bound to no agent acts as its name: that id is its tenant's too
    tokens.create("w1", "view", tenant_id="A")
    with pytest.raises(ValidationFailed):
        tokens.create("tb", "view", agent_id="w1", tenant_id="B")


def test_the_tenant_is_a_metrics_label(wm: WorkManager) -> None:
    """Lease and submit counters carry the item's tenant (``none`` for no tenant);
    ``WORK_MANAGER_METRICS_TENANT_LABEL=false`` builds metrics without the label."""
    from workmanager.metrics.factory import build_metrics
    from workmanager.settings import Settings

    ops = Operations(wm)
    for tenant in ("acme", None):
        who = caller(tenant)
        ops.propose(who, "test.simple", {"n": 1}, tenant_id=tenant)
        _, lease = ops.checkout(who, CheckoutFilters())
        ops.submit(who, lease["item"]["id"], lease["item"]["lease_token"], {"answer": 1})
    counters = wm.metrics.driver.counters  # type: ignore[attr-defined]
    for name in ("leases_acquired_total", "items_submitted_total"):
        tenants = {
            dict(labels).get("tenant")
            for (metric, labels) in counters
            if metric == f"work_manager.{name}"
        }
        assert tenants == {"acme", "none"}, (name, dict(counters))
    assert build_metrics(Settings.from_env({})).tenant_label is True
    off = Settings.from_env({"WORK_MANAGER_METRICS_TENANT_LABEL": "false"})
    assert build_metrics(off).tenant_label is False


def test_an_orders_checkout_says_when_its_type_is_not_registered_here(
    make_wm: Callable[..., WorkManager], database: str
) -> None:
    """Found by an adversarial pass: checkouts lease only the order types their process
    knows, and ``POST /orders/{id}/checkout`` of an order of another type answered a bare
    "no item is available" while the order showed ``queued``. The 409 names the type."""
    from tests.support.types import Multi

    both = make_wm(db=database, backend="database", registry=Registry([Simple(), Multi()]))
    order_id = both.propose("test.multi", {"count": 1})
    here = make_wm(db=database, backend="database", registry=Registry([Simple()]))
    with pytest.raises(NoItemsAvailable) as refused:
        Operations(here).checkout(caller(None), CheckoutFilters(), str(order_id))
    assert refused.value.details == {"type": "test.multi", "known_types": ["test.simple"]}
    assert "leased by a server or agent that registers it" in (refused.value.hint or "")
    mine = here.propose("test.simple", {"n": 1})
    _, body = Operations(here).checkout(caller(None), CheckoutFilters(), str(mine))
    assert body["item"]["order_id"] == str(mine)
