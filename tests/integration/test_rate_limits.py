"""Rate limits (SPEC §13, issue 17): token buckets per agent and per tenant, on the database
(SQLite, PostgreSQL) and on Redis, driven through the limiter and through the agent API.

The burst test hammers one bucket (20/s, burst 20) from several threads for 1.5 s: what it
accepts is the burst plus the rate times the time, between bounds computed from the calls'
own start and end times (``tests/support/buckets.py``), so a loaded machine widens them
and never breaks them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import update

from tests.support.buckets import assert_within, hammer
from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.db.models import Item
from workmanager.errors import NoItemsAvailable, RateLimited
from workmanager.ratelimit.base import Bucket
from workmanager.ratelimit.rate import Rate

STORES = [
    pytest.param(("sqlite", "database"), id="sqlite"),
    pytest.param(("postgres", "database"), id="postgres", marks=pytest.mark.postgres),
    pytest.param(
        ("postgres", "redis"), id="redis", marks=[pytest.mark.postgres, pytest.mark.redis]
    ),
    pytest.param(
        ("postgres", "redis-cluster"),
        id="redis-cluster",
        marks=[pytest.mark.postgres, pytest.mark.redis],
    ),
]


@pytest.fixture(params=STORES)
def store_wm(request: pytest.FixtureRequest, make_wm: Any) -> Any:
    """A WorkManager per bucket store; the test passes its limits."""
    db, backend = request.param

    def build(**limits: Any) -> WorkManager:
        wm: WorkManager = make_wm(db=db, backend=backend, registry=Registry([Simple()]), **limits)
        return wm

    return build


def test_burst_then_rate_within_bounds(store_wm: Any) -> None:
    wm = store_wm(rate_limit_checkout_per_agent=Rate(20, 1), rate_limit_burst=20)
    agent = f"a-{uuid.uuid4().hex[:6]}"
    waits: list[int] = []

    def take() -> bool:
        try:
            wm.limits.checkout(agent)
        except RateLimited as exc:
            waits.append(exc.retry_after)
            return False
        return True

    assert_within(hammer(take, 1.5), capacity=20, rate=20)
    assert min(waits) >= 1  # Retry-After in whole seconds, never 0


def test_tokens_are_taken_from_every_bucket_or_none(store_wm: Any) -> None:
    """Agent 3/m, tenant 2/m: the third call of tenant t1 is refused by the tenant's
    bucket and takes nothing from the agent's, which still serves one call for t2."""
    wm = store_wm(
        rate_limit_checkout_per_agent=Rate(3, 60), rate_limit_checkout_per_tenant=Rate(2, 60)
    )
    wm.limits.checkout("a", "t1")
    wm.limits.checkout("a", "t1")
    with pytest.raises(RateLimited) as refused:
        wm.limits.checkout("a", "t1")
    assert 25 <= refused.value.retry_after <= 30  # one token of 2/m: 30 s from the first
    wm.limits.checkout("a", "t2")  # the agent's third token: the refusal took none
    with pytest.raises(RateLimited) as agent_empty:
        wm.limits.checkout("a", "t2")
    assert 15 <= agent_empty.value.retry_after <= 20  # 3/m: a token every 20 s
    wm.limits.checkout("b", "t2")  # another agent, t2's second token


def test_retry_after_is_when_a_token_is_back(store_wm: Any) -> None:
    """1/s, burst 1: refused with Retry-After 1, and served again a second later."""
    wm = store_wm(rate_limit_checkout_per_agent=Rate(1, 1), rate_limit_burst=1)
    wm.limits.checkout("a")
    with pytest.raises(RateLimited) as refused:
        wm.limits.checkout("a")
    assert refused.value.retry_after == 1
    assert refused.value.to_dict()["details"] == {"retry_after": 1, "limit": "checkout"}
    time.sleep(1.05)  # the refill itself is what is tested: a token per second
    wm.limits.checkout("a")


def test_an_idle_bucket_refills_to_its_burst_and_no_further(store_wm: Any) -> None:
    """A mutation pass: the refill's cap at the burst could be dropped unnoticed (a bucket
    idle for longer than its refill then held more than its burst). 2/s, burst 2: spent,
    idle 1.6 s (3.2 tokens' worth), then two are served and the third is refused."""
    wm = store_wm(rate_limit_checkout_per_agent=Rate(2, 1), rate_limit_burst=2)
    agent = f"idle-{uuid.uuid4().hex[:6]}"
    for _ in range(2):
        wm.limits.checkout(agent)
    time.sleep(1.6)  # the refill is what is tested
    served = 0
    for _ in range(3):
        try:
            wm.limits.checkout(agent)
            served += 1
        except RateLimited:
            break
    assert served == 2


def test_a_rate_changed_between_restarts_starts_with_full_buckets(store_wm: Any) -> None:
    """Emptied at 1/s, then the process restarted at 1/h: the database's row refilled
    at the new rate (an hour's wait) while Redis's key had expired (full again): every
    store now starts the new limit's buckets full (a rate-limit pass)."""
    agent = f"a-{uuid.uuid4().hex[:6]}"
    fast = store_wm(rate_limit_checkout_per_agent=Rate(1, 1), rate_limit_burst=1)
    fast.limits.checkout(agent)
    with pytest.raises(RateLimited):
        fast.limits.checkout(agent)
    slow = store_wm(rate_limit_checkout_per_agent=Rate(1, 3600), rate_limit_burst=1)
    slow.limits.checkout(agent)  # a full bucket of the new limit
    with pytest.raises(RateLimited) as refused:
        slow.limits.checkout(agent)
    assert refused.value.retry_after > 3000


def test_checkout_through_the_agent_api_is_limited(make_wm: Any) -> None:
    wm = make_wm(
        db="sqlite",
        backend="database",
        registry=Registry([Simple()]),
        rate_limit_checkout_per_agent=Rate(2, 60),
    )
    for _ in range(3):
        wm.propose("test.simple", {"n": 1})
    assert wm.agent.checkout("a1") is not None
    assert wm.agent.checkout("a1") is not None
    with pytest.raises(RateLimited):
        wm.agent.checkout("a1")
    assert wm.agent.checkout("a2") is not None  # per agent


def test_a_consumers_item_checkout_counts_against_the_items_tenant(store_wm: Any) -> None:
    """A Celery consumer checks out the item its message names: with a per-tenant rate,
    that item's tenant's bucket (one lookup, only then)."""
    wm = store_wm(rate_limit_checkout_per_tenant=Rate(1, 60))
    items = []
    for _ in range(3):
        oid = wm.propose("test.simple", {"n": 1})
        items.append(wm.queries.order(oid)["items"][0]["id"])
    with wm.db.transaction() as s:
        s.execute(update(Item).where(Item.id.in_(map(uuid.UUID, items))).values(tenant_id="t9"))
    assert wm.agent.checkout("c1", item_id=items[0]) is not None
    with pytest.raises(RateLimited):
        wm.agent.checkout("c2", item_id=items[1])  # another agent, the same tenant
    assert wm.agent.checkout("c2", type="test.simple", tenant_id="t8") is None  # t8: its own


def test_an_orders_checkout_counts_against_the_orders_tenant(store_wm: Any) -> None:
    """A checkout of one order's items (``POST /orders/{id}/checkout``) by a caller bound
    to no tenant takes from that order's tenant's bucket: its items are that tenant's."""
    wm = store_wm(rate_limit_checkout_per_tenant=Rate(1, 60))
    orders = [wm.propose("test.simple", {"n": 1}, tenant_id="t7") for _ in range(2)]
    other = wm.propose("test.simple", {"n": 1}, tenant_id="t6")
    assert wm.agent.checkout("o1", order_id=orders[0]) is not None
    with pytest.raises(RateLimited):
        wm.agent.checkout("o2", order_id=orders[1])  # another agent, the same tenant
    assert wm.agent.checkout("o2", order_id=other) is not None  # t6: its own bucket


def test_a_consumers_message_for_an_item_not_leasable_takes_no_token(store_wm: Any) -> None:
    """A consumer's message for an item leased already (a redelivery, a re-announce)
    spends none of the agent's checkouts: the next message's item is still leased."""
    wm = store_wm(rate_limit_checkout_per_agent=Rate(1, 60))
    first = wm.queries.order(wm.propose("test.simple", {"n": 1}))["items"][0]["id"]
    second = wm.queries.order(wm.propose("test.simple", {"n": 1}))["items"][0]["id"]
    assert wm.agent.checkout("holder", item_id=first) is not None
    for _ in range(3):  # the same message delivered again, to another consumer
        assert wm.agent.checkout("c1", item_id=first) is None
    assert wm.agent.checkout("c1", item_id=second) is not None
    third = wm.queries.order(wm.propose("test.simple", {"n": 1}))["items"][0]["id"]
    with pytest.raises(RateLimited):  # its one token is spent now
        wm.agent.checkout("c1", item_id=third)


def test_no_limit_no_store(make_wm: Any) -> None:
    """Every limit unset: checkout never builds (or calls) a bucket store."""
    wm = make_wm(db="sqlite", backend="database", registry=Registry([Simple()]))
    wm.propose("test.simple", {"n": 1})
    assert wm.agent.checkout("a1") is not None
    assert wm.agent.checkout("a1") is None
    assert wm.limits._store is None


def test_buckets_are_independent_per_key(store_wm: Any) -> None:
    wm = store_wm(rate_limit_checkout_per_agent=Rate(1, 60))
    store = wm.limits.store
    one, two = Bucket("t:one", 1, 1 / 60), Bucket("t:two", 1, 1 / 60)
    assert store.take([one]) == 0.0
    assert store.take([one]) > 50
    assert store.take([two]) == 0.0


def test_a_bound_tokens_checkouts_count_against_its_tenant(make_wm: Any) -> None:
    """Through the operations layer (HTTP and MCP): a token bound to a tenant takes from
    its tenant's bucket, whatever agent it acts as; an unbound caller's global checkout
    from no tenant's bucket."""
    from workmanager.services.tokens import Principal
    from workmanager.surface.callers import Caller
    from workmanager.surface.operations import CheckoutFilters, Operations
    from workmanager.types import AgentInfo

    wm = make_wm(registry=Registry([Simple()]), rate_limit_checkout_per_tenant=Rate(1, 60))
    ops = Operations(wm)
    bound = Principal("t-token", None, frozenset({"checkout"}), "tb")
    unbound = Principal("op", None, frozenset({"checkout"}))
    with pytest.raises(NoItemsAvailable):
        ops.checkout(Caller(bound, AgentInfo("b1")), CheckoutFilters())
    with pytest.raises(RateLimited):
        ops.checkout(Caller(bound, AgentInfo("b2")), CheckoutFilters())
    for agent in ("u1", "u1", "u2"):  # no tenant named: no tenant bucket
        with pytest.raises(NoItemsAvailable):
            ops.checkout(Caller(unbound, AgentInfo(agent)), CheckoutFilters())
    with pytest.raises(RateLimited):  # the tenant named by an unbound caller: its bucket
        ops.checkout(Caller(unbound, AgentInfo("u3")), CheckoutFilters(tenant_id="tb"))


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_housekeeping_deletes_buckets_that_are_full_again(make_wm: Any, database: str) -> None:
    """A bucket row was kept for ever (each consumer agent's id names its host and pid).
    Maintenance deletes the rows untouched for longer than their own limit takes to
    refill, plus a margin (a missing row is a full bucket). Each row's refill time is
    read from its key: maintenance judged by its own process's limits, and where none
    was set (a limit of the API's alone) deleted an agent's bucket five minutes into a
    3-an-hour wait, which gave it three more at once (an audit pass)."""
    from sqlalchemy import select

    from workmanager.db.models import RateBucket
    from workmanager.ratelimit.database import PURGE_MARGIN_SECONDS
    from workmanager.ratelimit.rules import refill_seconds

    limited = make_wm(
        db=database,
        backend="database",
        registry=Registry([Simple()]),
        rate_limit_checkout_per_agent=Rate(3, 3600),
    )
    for _ in range(3):
        limited.propose("test.simple", {})
        assert limited.agent.checkout("slow") is not None
    with limited.db.transaction() as s:
        (slow,) = s.scalars(select(RateBucket.key))
    assert refill_seconds(slow) == pytest.approx(3600.0)
    now = time.time()
    with limited.db.transaction() as s:
        s.get(RateBucket, slow).updated_at = now - 900  # empty, a quarter of its hour idle
        s.add(RateBucket(key="checkout@10/0.166667:agent:gone", tokens=0.0, updated_at=now - 3600))
        s.add(RateBucket(key="checkout@10/0.166667:agent:edge", tokens=0.0, updated_at=now - 300))
        s.add(RateBucket(key="checkout@10/0.166667:agent:busy", tokens=3.0, updated_at=now))
        s.add(RateBucket(key="an:old:form", tokens=0.0, updated_at=now - 3600))
    assert 60 + PURGE_MARGIN_SECONDS < 900 < 3600 + PURGE_MARGIN_SECONDS
    # maintenance in a process with no limit set
    report = limited.maintenance.__class__(make_wm(db=database, backend="database").ctx).run()
    assert report.purged_rate_buckets == 2
    with limited.db.transaction() as s:
        keys = set(s.scalars(select(RateBucket.key)))
    assert keys == {slow, "checkout@10/0.166667:agent:edge", "checkout@10/0.166667:agent:busy"}
    limited.propose("test.simple", {})
    with pytest.raises(RateLimited):
        limited.agent.checkout("slow")  # still waiting out its hour
