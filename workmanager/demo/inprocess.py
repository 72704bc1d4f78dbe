"""An in-process run of the whole pipeline: producer, agent threads, a control loop.

Used by ``workmanager demo --in-process`` and the tests; the default ``demo`` runs the
same flow through a real Celery worker (see :mod:`workmanager.demo.celery_run`).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select

from ..container import WorkManager
from ..db.models import Order
from ..errors import WorkManagerError
from ..states import OrderState
from ..types import AgentInfo


class QueueDispatcher:
    """Hands announcements to the control loop through a thread-safe queue."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[str, uuid.UUID]] = queue.Queue()

    def order_submitted(self, order_id: uuid.UUID) -> None:
        self.queue.put(("submitted", order_id))

    def order_approved(self, order_id: uuid.UUID) -> None:
        self.queue.put(("approved", order_id))

    def items_available(self, order_type: str, item_ids: Sequence[uuid.UUID]) -> None:
        pass


@dataclass
class RunStats:
    lease_latencies: list[float] = field(default_factory=list)
    leases: int = 0
    order_ids: list[uuid.UUID] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float) -> None:
        with self.lock:
            self.lease_latencies.append(seconds)
            self.leases += 1


def answer(item_input: dict[str, object]) -> dict[str, object]:
    """What the demo's agents "find out"."""
    return {
        "answer": f"{item_input['company']}: notes on {item_input['question']}",
        "confidence": 0.9,
    }


def _agent(
    wm: WorkManager, agent_id: str, order_type: str, stop: threading.Event, stats: RunStats
) -> None:
    info = AgentInfo(
        id=agent_id, name="demo-agent", version="1.0.0", model_name="demo-model", runtime="python"
    )
    while not stop.is_set():
        t0 = time.perf_counter()
        lease = wm.agent.checkout(info, type=order_type)
        if lease is None:
            time.sleep(0.02)
            continue
        stats.add(time.perf_counter() - t0)
        assert lease.item is not None
        wm.agent.heartbeat(lease, progress=0.5, agent=info)
        wm.agent.submit(lease, answer(lease.item.input), agent=info)


def _control(wm: WorkManager, dispatcher: QueueDispatcher, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            kind, order_id = dispatcher.queue.get(timeout=0.05)
        except queue.Empty:
            continue
        try:
            if kind == "submitted":
                wm.orders.check_auto_approval(order_id)
            else:
                wm.executor.apply(order_id)
        except WorkManagerError:
            pass


def completed(wm: WorkManager, order_ids: list[uuid.UUID]) -> int:
    with wm.db.transaction() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(Order)
                .where(Order.id.in_(order_ids), Order.state == OrderState.COMPLETED.value)
            )
            or 0
        )


def run(
    wm: WorkManager,
    orders: int,
    agents: int,
    order_type: str,
    make_payload: Callable[[int], dict[str, object]],
    on_progress: Callable[[int], None] = lambda n: None,
    timeout: float = 300,
) -> RunStats:
    dispatcher = QueueDispatcher()
    wm.dispatcher = dispatcher
    stop, stats = threading.Event(), RunStats()
    threads = [threading.Thread(target=_control, args=(wm, dispatcher, stop), daemon=True)]
    threads += [
        threading.Thread(
            target=_agent, args=(wm, f"demo-agent-{n}", order_type, stop, stats), daemon=True
        )
        for n in range(1, agents + 1)
    ]
    for t in threads:
        t.start()
    ids = stats.order_ids = [wm.propose(order_type, make_payload(n)) for n in range(orders)]
    deadline = time.monotonic() + timeout
    try:
        while (done := completed(wm, ids)) < len(ids) and time.monotonic() < deadline:
            on_progress(done)
            time.sleep(0.1)
        on_progress(completed(wm, ids))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    return stats
