"""An idempotency key marked ``committed`` in the operation's own transaction (SPEC §6.3).

While a request runs the operation its key claimed
(:meth:`workmanager.services.idempotency.IdempotencyService.once`), the claim is the
*active* one in this context. The first transaction of :meth:`.session.Database.transaction`
that writes and commits while it is active also marks the key's row ``committed``, just
before its COMMIT, with the order and item its provenance rows name: the operation and the
mark commit together or not at all, so a key's outcome is never unknown. The response is
stored afterwards; if that step never happens (the process died), the key answers from the
mark and never runs the operation again.

Statements outside those transactions (the PostgreSQL path's raw SQL) carry the mark
themselves: they ask :func:`unmarked_claim` and, when a key is pending, send
:data:`RAW_MARK` in the statement's own transaction before its COMMIT.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, event, update
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from ..errors import IdempotencyInFlight
from . import pending
from .models import PROVENANCE_TABLE, IdempotencyKey
from .sql import queries

T = TypeVar("T")
IN_FLIGHT, COMMITTED, DONE = "in_flight", "committed", "done"
_WROTE = "workmanager.claim_wrote"
_MARKING = "workmanager.claim_marking"


@dataclass
class ActiveClaim:
    """The key row this context's operation holds, by ``ident`` (``(key_hash, id,
    created_at)``, what SQL sent without the ORM names it by); ``marked`` once a commit
    carried it."""

    ident: tuple[str, int, datetime]
    marked: bool = False

    @property
    def row(self) -> ColumnElement[bool]:
        """The ORM's condition that picks the row (:func:`row_of`), built only when the
        ORM marks it: a keyed call on PostgreSQL's statements never needs it."""
        return row_of(*self.ident)


_ACTIVE: ContextVar[ActiveClaim | None] = ContextVar("workmanager_claim", default=None)


def row_of(key_hash: str, row_id: int, claimed_at: datetime) -> ColumnElement[bool]:
    """The condition that picks one claim's key row (:class:`..services.idempotency.Claim`)."""
    return and_(
        IdempotencyKey.id == row_id,
        IdempotencyKey.key_hash == key_hash,
        IdempotencyKey.created_at == claimed_at,
    )


@contextmanager
def holding(ident: tuple[str, int, datetime]) -> Iterator[ActiveClaim]:
    """Make the claim of the key row ``ident`` names the active one for the block."""
    claim = ActiveClaim(ident)
    token = _ACTIVE.set(claim)
    try:
        yield claim
    finally:
        _ACTIVE.reset(token)


def unmarked() -> bool:
    """Whether a claim is active and no commit has marked it yet: a write must then go
    through :meth:`.session.Database.transaction`, which marks it. The one rule the hot
    paths ask before they take a call."""
    claim = _ACTIVE.get()
    return claim is not None and not claim.marked


def unmarked_claim() -> ActiveClaim | None:
    """The active claim while no commit has marked it (see :func:`unmarked`)."""
    claim = _ACTIVE.get()
    return claim if claim is not None and not claim.marked else None


#: The mark as one SQL statement, for a transaction the ORM does not see (the PostgreSQL
#: hot submit): the same row, the same condition and values as :func:`_before_commit`'s.
#: The claim's key row (``claim_row``) and what marking it committed sets
#: (``claim_committed``): shared with the keyed lease statements, which mark the key
#: themselves (``claim_held``, ``claim_marked``; db/postgres/sql.py).
CLAIM_ROW = queries.text("claim_row")
COMMITTED_SQL = queries.text("claim_committed")
RAW_MARK = queries.template("mark_claim", committed=COMMITTED_SQL, claim_row=CLAIM_ROW)


def claim_params(claim: ActiveClaim | None) -> dict[str, Any]:
    """Which key row is the claim's, as SQL parameters: :data:`RAW_MARK`'s, and those of a
    statement that marks the key itself (``claim_held`` / ``claim_marked``); none without
    a claim."""
    if claim is None:
        return {}
    key_hash, row_id, claimed_at = claim.ident
    return {"claim_id": row_id, "claim_hash": key_hash, "claim_at": claimed_at}


def raw_mark_params(claim: ActiveClaim, refs: dict[str, str]) -> dict[str, Any]:
    """The values of :data:`RAW_MARK` (``refs``: the order and item the operation wrote)."""
    from psycopg.types.json import Jsonb

    return {"claim_refs": Jsonb(refs), **claim_params(claim)}


def taken_over() -> IdempotencyInFlight:
    return IdempotencyInFlight(
        "the idempotency key was taken over by another request while this one ran"
    )


def _wrote(session: Session) -> None:
    session.info[_WROTE] = True


def _before_flush(session: Session, *_: Any) -> None:
    if not unmarked():
        return  # the usual case: nothing to watch
    if session.new or session.deleted or any(session.is_modified(o) for o in session.dirty):
        _wrote(session)


def _on_execute(state: ORMExecuteState) -> Any:
    """Note a write of the keyed operation. An update or delete that matched no row wrote
    nothing: counted as a write, a checkout that found no item (its grant an ``UPDATE …
    RETURNING`` of no row, on SQLite) marked its key and its 409 was stored and replayed
    for the key's life, the item leasable meanwhile. Only a single statement that leaves
    its result as it is (``synchronize_session=False``, as every keyed statement runs) is
    judged by what it touched; any other is counted as a write, as before (a bulk update
    by key, or the ORM's fetch of what it changed, leave no rows to judge by)."""
    if not unmarked() or not (state.is_insert or state.is_update or state.is_delete):
        return None
    judged = state.execution_options.get("synchronize_session") is False
    if state.is_insert or not judged or isinstance(state.parameters, list):
        _wrote(state.session)
        return None
    result = state.invoke_statement()
    if not getattr(result, "returns_rows", True):  # no RETURNING: the count says
        if getattr(result, "rowcount", -1) != 0:
            _wrote(state.session)
        return result
    frozen = result.freeze()  # RETURNING: its rows say, and are handed on as they were
    if frozen.data:
        _wrote(state.session)
    return frozen()


def _refs(session: Session) -> dict[str, str]:
    """The order and item the operation's provenance rows (still queued) name."""
    for row in pending.queued(session, PROVENANCE_TABLE):
        if row.get("idempotency_key_hash"):
            refs = {k: str(row[k]) for k in ("order_id", "item_id") if row.get(k)}
            if refs:
                return refs
    return {}


def _before_commit(session: Session) -> None:
    claim = _ACTIVE.get()
    if claim is None or claim.marked:
        return
    session.flush()
    if not (session.info.get(_WROTE) or pending.queued(session, PROVENANCE_TABLE)):
        return  # a read: nothing to mark
    refs = _refs(session)
    done = session.execute(
        update(IdempotencyKey)
        .where(claim.row, IdempotencyKey.status == IN_FLIGHT)
        .values(status=COMMITTED, response_body=refs or None)
        .execution_options(synchronize_session=False)
    )
    if not getattr(done, "rowcount", 1):
        # The claim was taken over (it outlived its in-flight lock): this operation must
        # not commit beside the one that now holds the key.
        raise taken_over()
    session.info[_MARKING] = claim


def _after_commit(session: Session) -> None:
    claim: ActiveClaim | None = session.info.pop(_MARKING, None)
    if claim is not None:
        claim.marked = True
    session.info.pop(_WROTE, None)


def _after_rollback(session: Session) -> None:
    session.info.pop(_MARKING, None)
    session.info.pop(_WROTE, None)


def install(factory: sessionmaker[Session]) -> None:
    """Mark the active claim in the first writing transaction of ``factory``'s sessions.
    Installed before :func:`.pending.install`, so the provenance rows are still queued."""
    event.listen(factory, "before_flush", _before_flush)
    event.listen(factory, "do_orm_execute", _on_execute)
    event.listen(factory, "before_commit", _before_commit)
    event.listen(factory, "after_commit", _after_commit)
    event.listen(factory, "after_rollback", _after_rollback)
