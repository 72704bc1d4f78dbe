"""A consumer agent keeps its leases alive while handlers run longer than the lease TTL.

One heartbeat thread per consumer serves every lease it holds (``workers.handlers.
Heartbeats``); these run the consumer directly, without Celery, on real threads.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from tests.support.types import Multi
from tests.support.waiting import wait_for
from workers.agent import AgentConsumer
from workmanager import AgentInfo, Registry

TTL = 3  # seconds
BEAT = 0.3  # the consumer beats every max(0.2, min(BEAT, TTL / 3)) seconds
# A beat may come up to TTL - BEAT = 2.7 s late before a lease is lost: slack for a loaded
# machine, where each beat of the one thread is a SQLite commit.


def slow_handler(seconds: float) -> Any:
    def handle(item: Any, lease: Any) -> dict[str, Any]:
        time.sleep(seconds)
        return {"i": item.input["i"]}

    return handle


def test_handlers_longer_than_the_ttl_keep_their_leases(make_wm) -> None:
    wm = make_wm(
        db="sqlite",
        backend="database",
        registry=Registry([Multi()]),
        lease_ttl_seconds=TTL,
        heartbeat_every_seconds=BEAT,
    )
    order_id = wm.propose("test.multi", {"count": 3})
    items = [i["id"] for i in wm.queries.order(order_id)["items"]]
    consumer = AgentConsumer(wm, slow_handler(TTL + 1.5), AgentInfo(id="slow-agent"))
    outcomes: list[str] = []

    def run(item_id: Any) -> None:
        outcomes.append(consumer.handle(uuid.UUID(item_id))[0])

    threads = [threading.Thread(target=run, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert outcomes == ["submitted"] * 3
    assert wm.queries.order(order_id)["state"] == "submitted"
    assert not consumer.heartbeats._due  # every finished lease was let go
    events = [e["event"] for e in wm.queries.events(order_id)]
    assert events.count("in_progress") >= 3  # each item's first beat (and the order's)


def test_a_lost_lease_is_reported_and_no_longer_beaten(make_wm) -> None:
    wm = make_wm(
        db="sqlite",
        backend="database",
        registry=Registry([Multi()]),
        lease_ttl_seconds=TTL,
        heartbeat_every_seconds=BEAT,
    )
    order_id = wm.propose("test.multi", {"count": 1})
    (item,) = wm.queries.order(order_id)["items"]
    taken = threading.Event()

    def handle(view: Any, lease: Any) -> dict[str, Any]:
        # Someone with the power to end the lease does (an operator's release).
        wm.agent.release(lease)
        taken.set()
        # The heartbeat thread finds the lease gone and stops beating it, while the
        # handler still runs (after it, the holder forgets the lease anyway).
        wait_for(lambda: not consumer.heartbeats._due, what="the beats to drop the lease")
        return {"i": 0}

    consumer = AgentConsumer(wm, handle, AgentInfo(id="unlucky"))
    outcome, _ = consumer.handle(uuid.UUID(item["id"]))
    assert taken.is_set() and outcome == "lost"  # the submit after it was refused


def test_a_result_meeting_an_outage_is_delivered_when_it_ends(make_wm, monkeypatch, caplog) -> None:
    """Found by a cluster failover pass: a submit that met a database or Redis outage
    threw the finished result away (the handler logged as failed, with a traceback, and
    the item done again). The consumer tries again while the heartbeats hold the lease;
    past its patience it says so in one line and reports the failure as retryable."""
    import workers.handlers as handlers
    from workmanager.errors import Unavailable

    monkeypatch.setattr(handlers.DELIVERY, "first_wait", 0.05)
    wm = make_wm(db="sqlite", backend="database", registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 2})
    first, second = (uuid.UUID(i["id"]) for i in wm.queries.order(order_id)["items"])
    consumer = AgentConsumer(wm, slow_handler(0), AgentInfo(id="patient-agent"))
    submit = wm.agent.submit
    outages = [Unavailable("database unavailable: server closed the connection")] * 2

    def submit_after_the_outage(*args: Any, **kwargs: Any) -> Any:
        if outages:
            raise outages.pop()
        return submit(*args, **kwargs)

    monkeypatch.setattr(wm.agent, "submit", submit_after_the_outage)
    assert consumer.handle(first)[0] == "submitted"
    assert wm.queries.item(first)["state"] == "submitted"
    tries = [r.getMessage() for r in caplog.records if "could not deliver" in r.getMessage()]
    assert len(tries) == 2 and "trying again" in tries[0]

    def down(*args: Any, **kwargs: Any) -> Any:
        raise Unavailable("database unavailable: server closed the connection")

    monkeypatch.setattr(handlers.DELIVERY, "seconds", 0.3)
    monkeypatch.setattr(wm.agent, "submit", down)
    caplog.clear()
    assert consumer.handle(second)[0] == "failed"
    [said] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert said.getMessage().startswith(f"could not deliver the work on {second}: ")
    assert said.exc_info is None and wm.queries.item(second)["state"] == "queued"


def test_a_handler_calling_sys_exit_is_a_reported_failure(make_wm) -> None:
    """``sys.exit()`` in a handler passed ``except Exception`` into Celery: on the threads
    pool the agent hung on the message with nothing logged (its slot never given back), on
    the solo pool it exited (a Celery pass)."""

    def exits(item: Any, lease: Any) -> dict[str, Any]:
        raise SystemExit(2)

    wm = make_wm(db="sqlite", backend="database", registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 1})
    [item] = wm.queries.order(order_id)["items"]
    consumer = AgentConsumer(wm, exits, AgentInfo(id="exiting-agent"))
    assert consumer.handle(uuid.UUID(item["id"]))[0] == "failed"
    after = wm.queries.item(uuid.UUID(item["id"]))
    assert after["state"] == "queued" and after["error"]["code"] == "SystemExit"
