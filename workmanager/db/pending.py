"""Append-only rows (events, provenance) written once per transaction, at commit.

Services record audit rows as they go; instead of one ORM insert each (a round trip and
identity-map bookkeeping per row), the rows wait in ``session.info`` and go out as one
multi-row INSERT per table just before the commit, after the ORM flush, so every row they
reference exists. A rolled-back transaction drops them with everything else.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, event, insert
from sqlalchemy.orm import Session, sessionmaker

from .. import events

_KEY = "workmanager.pending_rows"
_COMMITTING = "workmanager.committing_events"
EVENTS = "work_events"


def add(session: Session, table: Table, row: dict[str, Any]) -> None:
    """Queue ``row`` for ``table``; every row of one table must have the same keys."""
    session.info.setdefault(_KEY, {}).setdefault(table, []).append(row)


def queued(session: Session, table: Table) -> list[dict[str, Any]]:
    """The rows waiting for ``table`` in this transaction (not yet written)."""
    rows: list[dict[str, Any]] = session.info.get(_KEY, {}).get(table, [])
    return rows


def _write(session: Session) -> None:
    pending: dict[Table, list[dict[str, Any]]] | None = session.info.pop(_KEY, None)
    if not pending:
        return
    session.flush()
    for table, rows in pending.items():
        session.execute(insert(table), rows)
        if table.name == EVENTS and events.listening():
            session.info.setdefault(_COMMITTING, []).extend(rows)


def _announce(session: Session) -> None:
    """After the commit: the event listeners hear what it recorded (workmanager.events)."""
    rows = session.info.pop(_COMMITTING, None)
    if rows:
        events.announce_rows(rows)


def _drop(session: Session, *_: Any) -> None:
    session.info.pop(_KEY, None)
    session.info.pop(_COMMITTING, None)


def install(factory: sessionmaker[Session]) -> None:
    """Write pending rows before each commit of sessions from ``factory``, and announce
    the events among them after it."""
    event.listen(factory, "before_commit", _write)
    event.listen(factory, "after_commit", _announce)
    event.listen(factory, "after_rollback", _drop)
