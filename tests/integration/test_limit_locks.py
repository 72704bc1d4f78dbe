"""The lease limits' locks on PostgreSQL (leases/limits.py): one key per agent, type and
tenant, waited for at most ``lock_timeout``. Found by a limits pass: every checkout
counted every held lease under one lock for the whole deployment, so one checkout stalled
while it held that lock (a frozen process) stopped every checkout, for good."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from tests.support.types import Multi, Simple
from workmanager import Registry
from workmanager.errors import Contention

pytestmark = pytest.mark.postgres


def _holding(wm: Any, key: str) -> Any:
    """A connection holding the advisory lock of ``key``, as a checkout frozen in its
    count would (its transaction open)."""
    dsn = wm.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    holder = psycopg.connect(dsn)
    holder.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
    return holder


def test_a_stalled_holder_of_a_type_leaves_the_others_free(make_wm: Any) -> None:
    """A review found the first version waiting on the stalled type again at each try: an
    unscoped checkout whose first pick was of that type answered 503 after 8 s, though
    another type's item was free. A type whose lock is not had within the timeout is left
    out like a full one; a checkout that only that type could serve answers 503."""
    wm = make_wm(
        db="postgres", backend="database", registry=Registry([Simple(), Multi()]),
        max_leases_per_type=5,
    )  # fmt: skip
    stuck = wm.propose("test.simple", {}, priority=9)
    other = wm.propose("test.multi", {"count": 1})
    with _holding(wm, "wm:type:test.simple") as holder:
        started = time.monotonic()
        lease = wm.agent.checkout("agent-b")  # picks test.simple first: busy, so the other
        assert lease is not None and lease.order_id == other
        assert time.monotonic() - started < 6
        with pytest.raises(Contention) as refused:
            wm.agent.checkout("agent-a", order_id=stuck)
        assert refused.value.http_status == 503 and refused.value.code == "unavailable"
        assert "type 'test.simple'" in refused.value.message
        assert time.monotonic() - started < 20  # a few tries of 2 s: not for good
        holder.rollback()  # the stalled checkout goes away
    assert wm.agent.checkout("agent-a", order_id=stuck) is not None
    assert wm.queries.order(stuck)["items"][0]["attempts"] == 1  # the refused tries: none


def test_an_agent_at_its_limit_locks_no_item_another_could_have(make_wm: Any) -> None:
    """A review found agents polling at their own limit leasing the top item first and
    only then waiting for their agent's lock: a racing agent skipped the locked row and
    was told "no items" (SPEC §4.5). The agent's limit is counted before the grant."""
    wm = make_wm(
        db="postgres", backend="database", registry=Registry([Simple()]),
        max_leases_per_agent=1,
    )  # fmt: skip
    wm.propose("test.simple", {})
    got: list[Any] = []
    with _holding(wm, "wm:agent:agent-a") as holder:  # agent-a's other checkout, counting
        polling = threading.Thread(target=lambda: got.append(wm.agent.checkout("agent-a")))
        polling.start()
        time.sleep(0.3)  # agent-a waits for its own lock, holding no row
        lease = wm.agent.checkout("agent-b")
        assert lease is not None  # not "no items"
        holder.rollback()
        polling.join(10)
    assert got == [None]  # the only item was agent-b's


def test_checkouts_of_different_types_do_not_wait_for_each_other(make_wm: Any) -> None:
    """Many threads checking out two types under a type limit: each type's grants are
    counted under its own lock, and both limits hold."""
    wm = make_wm(
        db="postgres", backend="database", registry=Registry([Simple(), Multi()]),
        max_leases_per_type=4,
    )  # fmt: skip
    wm.propose("test.multi", {"count": 10})
    for _ in range(10):
        wm.propose("test.simple", {})
    got: list[Any] = []
    start = threading.Barrier(8)

    def agent(n: int) -> None:
        start.wait()
        for _ in range(3):
            got.append(wm.agent.checkout(f"agent-{n}", type=("test.multi", "test.simple")[n % 2]))

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    held = [lease for lease in got if lease is not None]
    assert len(held) == 8  # four of each type, and no more
    types = sorted(wm.queries.order(lease.order_id)["type"] for lease in held)
    assert types == ["test.multi"] * 4 + ["test.simple"] * 4


def test_a_checkout_frozen_in_its_transaction_holds_no_one_for_good(make_wm: Any) -> None:
    """Found by a limits pass: on the Redis backend a checkout spans round trips (grant,
    the Redis lock, COMMIT); one frozen in between holds its order's row (its first
    lease starts the order), and every checkout reaching that order waited on it with no
    bound, limits or not. Every such transaction has the lock timeout: 503, try again."""
    wm = make_wm(db="postgres", backend="redis", registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 2})
    dsn = wm.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    said: list[Any] = []

    def checkout() -> None:
        try:
            said.append(wm.agent.checkout("agent-b", order_id=order_id))
        except Exception as exc:
            said.append(exc)

    with psycopg.connect(dsn) as frozen:  # its grant's start of the order, uncommitted
        frozen.execute("SELECT 1 FROM work_orders WHERE id = %s FOR UPDATE", (order_id,))
        started = time.monotonic()
        waiting = threading.Thread(target=checkout, daemon=True)
        waiting.start()
        waiting.join(30)
        assert not waiting.is_alive(), "the checkout waited for good"
        assert isinstance(said[0], Contention), said
        assert time.monotonic() - started < 20
        assert "CONTEXT" not in said[0].message and "work_orders" not in said[0].message
        frozen.rollback()
    assert wm.agent.checkout("agent-b", order_id=order_id) is not None
