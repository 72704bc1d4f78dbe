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


def test_a_stalled_holder_stops_only_its_own_type_and_not_for_good(make_wm: Any) -> None:
    wm = make_wm(
        db="postgres", backend="database", registry=Registry([Simple(), Multi()]),
        max_leases_per_type=5,
    )  # fmt: skip
    stuck = wm.propose("test.simple", {})
    other = wm.propose("test.multi", {"count": 1})
    dsn = wm.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as holder:  # a checkout of test.simple frozen in its count
        holder.execute("SELECT pg_advisory_xact_lock(hashtextextended('wm:type:test.simple', 0))")
        started = time.monotonic()
        lease = wm.agent.checkout("agent-b", order_id=other)  # another type: not held up
        assert lease is not None and time.monotonic() - started < 1.5
        with pytest.raises(Contention) as refused:
            wm.agent.checkout("agent-a", order_id=stuck)
        waited = time.monotonic() - started
        assert refused.value.http_status == 503 and refused.value.code == "unavailable"
        assert waited < 20, waited  # 2 s a try, a few tries: not for good
        holder.rollback()  # the stalled checkout goes away
    assert wm.agent.checkout("agent-a", order_id=stuck) is not None
    assert wm.queries.order(stuck)["items"][0]["attempts"] == 1  # the refused tries: none


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
