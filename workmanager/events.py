"""Listeners for the upstream's events (laravel-work-manager's ``WorkOrder*`` / ``WorkItem*``).

Register a callable for an event name; it is called with an :class:`Event` **after** the
transaction that recorded it commits (never for a rolled-back one), in the process that
made the change. A listener that raises is logged and never breaks the operation, nor the
other listeners::

    from workmanager import events

    @events.on(events.ORDER_APPROVED)
    def notify(event: events.Event) -> None:
        print("approved", event.order_id)

Events come from the rows of ``work_events`` as they are written, so every path that changes
state announces them (HTTP, MCP, Celery tasks, the CLI): the ORM's transactions from
the rows they flushed, the PostgreSQL path's statements from the rows they return. A
listener runs in the caller's thread after the commit, so a slow one slows the operation
that announced it: keep them quick, and use the event table or metrics for high-volume
consumers. ``on("*")`` receives every event.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger("workmanager.events")

ORDER_PROPOSED = "WorkOrderProposed"
ORDER_PLANNED = "WorkOrderPlanned"
ORDER_APPROVED = "WorkOrderApproved"
ORDER_REJECTED = "WorkOrderRejected"
ORDER_APPLIED = "WorkOrderApplied"
ORDER_COMPLETED = "WorkOrderCompleted"
ITEM_LEASED = "WorkItemLeased"
ITEM_HEARTBEAT = "WorkItemHeartbeat"
ITEM_SUBMITTED = "WorkItemSubmitted"
ITEM_PART_SUBMITTED = "WorkItemPartSubmitted"
ITEM_PART_VALIDATED = "WorkItemPartValidated"
ITEM_PART_REJECTED = "WorkItemPartRejected"
ITEM_FINALIZED = "WorkItemFinalized"
ITEM_LEASE_EXPIRED = "WorkItemLeaseExpired"
ITEM_FAILED = "WorkItemFailed"
ANY = "*"

NAMES = (
    ORDER_PROPOSED,
    ORDER_PLANNED,
    ORDER_APPROVED,
    ORDER_REJECTED,
    ORDER_APPLIED,
    ORDER_COMPLETED,
    ITEM_LEASED,
    ITEM_HEARTBEAT,
    ITEM_SUBMITTED,
    ITEM_PART_SUBMITTED,
    ITEM_PART_VALIDATED,
    ITEM_PART_REJECTED,
    ITEM_FINALIZED,
    ITEM_LEASE_EXPIRED,
    ITEM_FAILED,
)

#: (our event row's name, is it an item's) → the upstream events it announces
_ORDER_ROWS = {
    "proposed": (ORDER_PROPOSED,),
    "planned": (ORDER_PLANNED,),
    "approved": (ORDER_APPROVED,),
    "rejected": (ORDER_REJECTED,),
    "applied": (ORDER_APPLIED,),
    "completed": (ORDER_COMPLETED,),
}
_ITEM_ROWS = {
    "leased": (ITEM_LEASED,),
    "submitted": (ITEM_SUBMITTED,),
    "part_submitted": (ITEM_PART_SUBMITTED, ITEM_PART_VALIDATED),
    "part_rejected": (ITEM_PART_REJECTED,),
    "lease_expired": (ITEM_LEASE_EXPIRED,),
    "failed": (ITEM_FAILED,),
    "agent_failed": (ITEM_FAILED,),
}


@dataclass(frozen=True)
class Event:
    """One announced event: the upstream ``name`` and the ``work_events`` row behind it
    (``event`` is the row's own name, e.g. ``leased``)."""

    name: str
    event: str
    order_id: uuid.UUID | None
    item_id: uuid.UUID | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


Listener = Callable[[Event], Any]
_lock = threading.Lock()
_listeners: dict[str, list[Listener]] = {}


def listen(name: str, listener: Listener) -> None:
    """Call ``listener`` for every event ``name`` (one of :data:`NAMES`, or ``"*"``)."""
    if name not in NAMES and name != ANY:
        raise ValueError(f"unknown event {name!r}; one of {', '.join(NAMES)} or '*'")
    with _lock:
        _listeners.setdefault(name, []).append(listener)


def on(name: str) -> Callable[[Listener], Listener]:
    """Decorator form of :func:`listen`."""

    def register(listener: Listener) -> Listener:
        listen(name, listener)
        return listener

    return register


def clear() -> None:
    """Forget every listener (tests)."""
    with _lock:
        _listeners.clear()


def listening() -> bool:
    """Whether any listener is registered (nothing is announced while none is)."""
    return bool(_listeners)


def announce(event: Event) -> None:
    """Call the listeners of ``event.name`` and of ``"*"``; each failure is logged."""
    with _lock:
        targets = [*_listeners.get(event.name, ()), *_listeners.get(ANY, ())]
    for listener in targets:
        try:
            listener(event)
        except Exception:
            log.exception("event listener %r failed on %s", listener, event.name)


def of_row(row: Mapping[str, Any]) -> list[Event]:
    """The upstream events one ``work_events`` row announces."""
    name, item_id = row.get("event"), row.get("item_id")
    table = _ITEM_ROWS if item_id is not None else _ORDER_ROWS
    names = list(table.get(str(name), ()))
    payload = row.get("payload") or {}
    if name == "submitted" and item_id is not None and "mode" in payload:
        names.append(ITEM_FINALIZED)
    return [
        Event(
            n,
            str(name),
            row.get("order_id"),
            item_id,
            row.get("actor_type"),
            row.get("actor_id"),
            payload,
            row.get("created_at"),
        )
        for n in names
    ]


def announce_rows(rows: Iterable[Mapping[str, Any]]) -> None:
    """Announce what committed ``work_events`` rows say (called after the commit); while
    this thread holds a pooled connection (:func:`holding`), once it is given back."""
    waiting: list[Mapping[str, Any]] | None = getattr(_held, "rows", None)
    if waiting is not None:
        waiting.extend(rows)
        return
    for row in rows:
        for event in of_row(row):
            announce(event)


_held = threading.local()


class holding:
    """The block holds a pooled database connection: the events its commits announce
    wait for it to end, so a listener (which may call back into the services, or be
    slow) never runs with the connection lent. Listeners running with it held starved
    the pool: 40 concurrent submits whose listener leased waited 30 s, then failed.
    Nested, the outermost announces; after an error too (what committed, committed).
    A class, not a generator: it is on every call's path (~0.9 µs, docs/benchmarks.md)."""

    __slots__ = ("inner",)

    def __enter__(self) -> None:
        self.inner = getattr(_held, "rows", None) is not None
        if not self.inner:
            _held.rows = []

    def __exit__(self, *exc: object) -> None:
        if not self.inner:
            committed, _held.rows = _held.rows, None
            announce_rows(committed)
