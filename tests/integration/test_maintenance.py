"""Maintenance re-announces work whose message was lost: applies and auto-approvals."""

from __future__ import annotations

from datetime import timedelta

from tests.support.types import Multi, Picky, Simple
from workmanager import Registry
from workmanager.db.models import utcnow


def later(wm, seconds: float) -> None:
    wm.ctx.clock = lambda: utcnow() + timedelta(seconds=seconds)


def submitted_order(wm, type_name: str, payload: dict) -> object:
    order_id = wm.propose(type_name, payload)
    lease = wm.agent.checkout("agent-1")
    wm.agent.submit(lease, {"answer": 1})
    return order_id


def test_stuck_apply_is_reannounced_only_after_the_recovery_window(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([Simple()]), apply_recovery_seconds=300)
    order_id = submitted_order(wm, "test.simple", {"n": 1})
    wm.approve(order_id)
    wm.dispatcher.approved.clear()
    assert wm.maintenance.run().recovered_applies == []
    later(wm, 301)
    assert wm.maintenance.run().recovered_applies == [order_id]
    assert wm.dispatcher.approved == [order_id]
    # Sent once per window, not on every run while the apply queue is stalled.
    assert wm.maintenance.run().recovered_applies == []
    later(wm, 2 * 301)
    assert wm.maintenance.run().recovered_applies == [order_id]
    assert wm.dispatcher.approved == [order_id, order_id]


def test_lost_auto_approval_check_is_reannounced(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([Picky(), Simple()]), apply_recovery_seconds=60)
    auto = submitted_order(wm, "test.picky", {"ok": False})  # refused: stays submitted
    manual = submitted_order(wm, "test.simple", {"n": 1})  # not auto-approving
    assert wm.maintenance.run().recovered_auto_approvals == []
    before = len(wm.dispatcher.submitted)
    later(wm, 61)
    report = wm.maintenance.run()
    assert report.recovered_auto_approvals == [auto]
    assert wm.dispatcher.submitted[before:] == [auto]
    assert manual not in report.recovered_auto_approvals
    assert wm.maintenance.run().recovered_auto_approvals == []  # once per window


def test_orders_queued_or_in_progress_too_long_are_flagged_stale(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([Simple()]), stale_order_hours=2)
    done = submitted_order(wm, "test.simple", {"n": 3})  # submitted: not stale
    waiting = wm.propose("test.simple", {"n": 1})
    working = wm.propose("test.simple", {"n": 2})
    assert wm.agent.checkout("agent-1", order_id=working) is not None
    assert wm.maintenance.run().stale_orders == []
    later(wm, 2 * 3600 + 1)
    stale = wm.maintenance.run().stale_orders
    assert sorted(stale) == sorted([str(waiting), str(working)]) and str(done) not in stale
    assert wm.metrics.driver.gauges[("work_manager.stale_orders", ())] == 2


def test_queue_depth_counts_only_items_a_checkout_will_take(make_wm, database) -> None:
    """The items left ``queued`` in an order that failed (one item failed for good) are
    never leased: they counted in ``queue_depth`` for ever, which scales agents and fires
    the queue-depth alert."""
    wm = make_wm(db=database, registry=Registry([Multi(), Simple()]))
    failing = wm.propose("test.multi", {"count": 3})
    wm.propose("test.multi", {"count": 2})
    lease = wm.agent.checkout("agent-1", order_id=failing)
    wm.agent.fail(lease, {"code": "broken", "message": "for good"}, retryable=False)
    assert wm.agent.checkout("agent-1", order_id=failing) is None
    wm.maintenance.run()
    gauges = wm.metrics.driver.gauges
    assert gauges[("work_manager.queue_depth", (("type", "test.multi"),))] == 2
    assert gauges[("work_manager.queue_depth", (("type", "test.simple"),))] == 0


def test_the_stale_orders_gauge_counts_past_the_ids_it_lists(make_wm) -> None:
    """It stopped at the 1,000 ids read for the log."""
    wm = make_wm(db="sqlite", registry=Registry([Simple()]), stale_order_hours=1)
    for n in range(1003):
        wm.propose("test.simple", {"n": n})
    later(wm, 3601)
    report = wm.maintenance.run()
    assert (report.stale_total, len(report.stale_orders)) == (1003, 1000)
    assert wm.metrics.driver.gauges[("work_manager.stale_orders", ())] == 1003
