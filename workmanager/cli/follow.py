"""``--wait``: follow an order to its end with a live status line on stderr."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..errors import NotFound, TimedOut
from ..reads.queries import Queries
from ..states import OrderState
from .render import console

#: The states an order does not leave without a person (or a retry).
ENDS = frozenset(
    {OrderState.COMPLETED, OrderState.FAILED, OrderState.REJECTED, OrderState.DEAD_LETTERED}
)
POLL_SECONDS = 0.2


def follow(
    queries: Queries,
    order_id: uuid.UUID,
    timeout: float | None,
    found: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Poll the order until it reaches one of :data:`ENDS` and return it; the status line
    shows its state and its items' states. Before the worker has created it, it is
    ``enqueued``. ``found`` is called once with the order when it first exists (it may
    raise: the order is not the one the caller sent, say)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with console(stderr=True).status(f"order {order_id}: enqueued") as status:
        while True:
            order = _current(queries, order_id)
            if order is not None:
                if found is not None:
                    found(order)
                    found = None
                if order["state"] in ENDS:
                    return order
                status.update(f"order {order_id}: {_line(order)}")
            if deadline is not None and time.monotonic() > deadline:
                state = order["state"] if order else "enqueued"
                raise TimedOut(
                    f"order {order_id} is still {state} after {timeout:g}s",
                    details={"order_id": str(order_id), "state": state},
                    hint=WAITING_ON.get(state, "").format(order_id=order_id) or None,
                )
            time.sleep(POLL_SECONDS)


#: What an order still in that state waits for, said when ``--wait`` gives up.
WAITING_ON = {
    "enqueued": "no control worker has created it yet: is `celery -A tasks worker` running,"
    " on the same WORK_MANAGER_BROKER_URL and database as this command?",
    "queued": "no agent has leased its items: is an agent for its type running"
    " (`workmanager agent --type …`, or one over HTTP or MCP)?",
    "in_progress": "its agents have not submitted every item yet (`workmanager orders show"
    " {order_id}`)",
    "submitted": "it waits for a reviewer: `workmanager orders review {order_id} --approve`",
    "approved": "its apply has not finished: is `celery -A tasks worker` consuming the apply"
    " queue (WORK_MANAGER_APPLY_QUEUE)?",
}


def _current(queries: Queries, order_id: uuid.UUID) -> dict[str, Any] | None:
    try:
        return queries.order(order_id, events=0)
    except NotFound:
        return None


def _line(order: dict[str, Any]) -> str:
    items = Counter(i["state"] for i in order["items"])
    summary = ", ".join(f"{n} {state}" for state, n in sorted(items.items()))
    waiting = " (waiting for a reviewer)" if order["state"] == OrderState.SUBMITTED else ""
    return f"{order['state']}{waiting} · items: {summary or 'none yet'}"
