"""The whole pipeline once, on every (database, lease backend) pair."""

from __future__ import annotations

from tests.support.types import Simple
from workmanager import OrderState, Registry


def test_propose_lease_submit_approve_apply(make_wm, backend) -> None:
    db, lease_backend = backend
    simple = Simple()
    wm = make_wm(db=db, backend=lease_backend, registry=Registry([simple]))
    order_id = wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-1")
    assert lease is not None and lease.order_id == order_id
    wm.agent.heartbeat(lease, progress=0.5)
    outcome = wm.agent.submit(lease, {"answer": 42})
    assert outcome.order_submitted and outcome.order_state == OrderState.SUBMITTED
    wm.approve(order_id)
    result = wm.executor.apply(order_id)
    assert result.recorded and result.order["state"] == OrderState.COMPLETED
    assert simple.apply_calls == 1
    events = [e["event"] for e in wm.queries.events(order_id)]
    assert events.count("applied") == 1
