"""The right to be forgotten: an agent's or a user's id erased from every record, in one
transaction (``workmanager provenance forget``, ``POST /provenance/forget``).

The rule, in one place:

- **Provenance rows** that name the subject (``agent_id`` or ``principal``) are kept, so
  the counts per action and the timeline stay, but anonymised: the agent id becomes a
  pseudonym; the request's traces (IP, user agent, request id, fingerprint, principal,
  idempotency key hash, agent name, ``extra``) are cleared, and so is any other field that
  contains the id (the agent type derived from it, say).
- **Events**: an actor that is the subject becomes the pseudonym, and so does the id
  wherever it stands in an event's payload or message (``{"agent_id": ...}``). The work
  itself — payloads, inputs, results, evidence, notes, part keys, diffs, item errors,
  also where an event's payload or a failed order's ``last_error`` carries them
  (:data:`WORK`) — is untouched.
- Orders proposed by the subject (``requested_by_id``), items it held and parts it sent
  name the pseudonym; a rejection's ``last_error`` likewise.
- **Tokens** bound to the subject or named after it are revoked (the id replaced by the
  pseudonym): a token still able to act under the id would write it again. Console
  sessions of such a principal are deleted. Stored idempotency answers that name the id
  get the pseudonym in its place (a replay would hand it back); their keys are kept, so
  a retry still replays instead of running twice.
- **Live leases**: refused (409 ``lease_conflict``) while the subject holds an item, since
  the lease (and a lease store's lock) carries the id; release them, or let them expire
  and the sweep reclaim them, then forget.
- One pseudonym per erasure, ``forgotten-<16 hex>``: an HMAC of the id under a random key
  that is thrown away, so records keep their shape (every row of the subject names the
  same pseudonym) yet nothing maps it back to the id.
- One audit event, ``provenance_forgotten`` (order id all zeros: it concerns no order),
  records that an erasure happened, by whom, of which kind of subject and how many rows;
  never whose.

Agent ids and user ids share one namespace in practice (a token's name is its agent id
when no other is given), so ``--agent`` and ``--user`` erase the id wherever it stands;
they differ in the audit event's ``subject``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, delete, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from ..db.models import (
    ApiToken,
    Event,
    IdempotencyKey,
    Item,
    Order,
    Part,
    Provenance,
    RateBucket,
    UiSession,
    utcnow,
)
from ..db.predicates import count_rows
from ..errors import LeaseConflict, ValidationFailed, problem
from ..states import HELD_ITEM_STATES
from ..types import Actor
from .context import ServiceContext
from .transitions import record_event

SUBJECTS = ("agent", "user")
#: The order id of events that concern no order.
NO_ORDER = uuid.UUID(int=0)
HELD = tuple(state.value for state in HELD_ITEM_STATES)
#: Rows read and written back at a time (:meth:`_Eraser.rewrite`).
BATCH = 500
#: Provenance columns that describe the request, not the work: cleared.
REQUEST_TRACES = (
    "agent_name",
    "request_id",
    "request_fingerprint",
    "ip_address",
    "user_agent",
    "principal",
    "idempotency_key_hash",
    "extra",
)
#: Provenance columns kept unless they contain the id.
DESCRIPTIVE = ("agent_type", "agent_version", "model_name", "runtime")


@dataclass(frozen=True)
class Subject:
    """Whose records to erase: ``kind`` is ``agent`` or ``user``."""

    kind: str
    id: str

    def check(self) -> None:
        errors = []
        if self.kind not in SUBJECTS:
            errors.append(problem("kind", "agent or user", "enum"))
        if not isinstance(self.id, str) or not self.id.strip() or len(self.id) > 191:
            message = "a non-empty id of at most 191 characters"
            errors.append(problem(f"{self.kind}_id", message, "type"))
        elif "\x00" in self.id:  # no record can name it (PostgreSQL stores no NUL)
            errors.append(problem(f"{self.kind}_id", "must not contain NUL characters", "type"))
        if errors:
            raise ValidationFailed(errors)


def pseudonym(subject_id: str) -> str:
    """A stable name for this erasure, under a key nobody keeps."""
    digest = hmac.new(secrets.token_bytes(32), subject_id.encode(), hashlib.sha256)
    return f"forgotten-{digest.hexdigest()[:16]}"


#: What records hold of the work itself, never rewritten: an id that stands in a result,
#: in evidence or notes (a URL, a quote), a part's key or a validator's message is the
#: work's content, not a record of who did it.
WORK = frozenset(
    {
        "payload",
        "input",
        "result",
        "assembled_result",
        "evidence",
        "notes",
        "diff",
        "checkpoint",
        "part_key",
        "parts",
        "item_parts_state",
        "required_parts",
        "missing_parts",
        "error",  # an item's error, as its agent or the hook wrote it (events carry copies)
    }
)


def scrub(value: Any, old: str, new: str) -> Any:
    """``value`` with ``old`` replaced by ``new`` wherever it stands as a whole id in a
    string (keys included): not inside a longer id or word, so forgetting ``bob`` leaves
    ``bobcat`` and ``bob-2`` alone; never under the keys of :data:`WORK`."""
    pattern = re.compile(rf"(?<![\w.@-]){re.escape(old)}(?![\w.@-])")
    return _scrub(value, pattern, new)


def _scrub(value: Any, pattern: re.Pattern[str], new: str) -> Any:
    if isinstance(value, str):
        return pattern.sub(new, value)
    if isinstance(value, list):
        return [_scrub(v, pattern, new) for v in value]
    if isinstance(value, dict):
        work = WORK - {"payload"} if _is_event(value) else WORK
        return {
            _scrub(k, pattern, new): v if k in work else _scrub(v, pattern, new)
            for k, v in value.items()
        }
    return value


def _is_event(value: dict[str, Any]) -> bool:
    """An event as answers carry it (``approve?wait``'s order, with its events): its
    ``payload`` is the record of who did what (``{"agent_id": ...}``), scrubbed as the
    event row's own is, the work under it still left alone."""
    return "event" in value and "actor_type" in value


class Forget:
    """Erases a subject's id (see the module's docstring for the rule)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def forget(self, subject: Subject, actor: Actor, *, dry_run: bool = False) -> dict[str, Any]:
        """Erase (or with ``dry_run`` only count) what names ``subject``; the answer is
        ``{subject, dry_run, live_leases, counts}``, with no id in it."""
        subject.check()
        return self.ctx.db.run(lambda s: self._tx(s, subject, actor, dry_run))

    def _tx(self, s: Session, subject: Subject, actor: Actor, dry_run: bool) -> dict[str, Any]:
        sid = subject.id
        live = count_rows(s, Item, Item.leased_by_agent_id == sid, Item.state.in_(HELD))
        answer: dict[str, Any] = {"subject": subject.kind, "dry_run": dry_run}
        if live and not dry_run:
            raise _holding(subject.kind, live)
        eraser = _Eraser(s, sid, pseudonym(sid), dry_run, subject.kind)
        counts = eraser.run()
        if not dry_run:
            who = actor if actor.id is None or sid not in actor.id else Actor(actor.type, None)
            record_event(
                s,
                NO_ORDER,
                "provenance_forgotten",
                who,
                payload={"subject": subject.kind, "counts": counts},
            )
        return {**answer, "live_leases": live, "counts": counts}


def _holding(kind: str, live: int) -> LeaseConflict:
    return LeaseConflict(
        f"the {kind} holds {live} live lease(s): release them, or let them expire and the"
        " sweep reclaim them, then forget",
        details={"live_leases": live},
    )


class _Eraser:
    """One erasure's statements; each step returns how many rows it touched (or would)."""

    def __init__(self, s: Session, sid: str, alias: str, dry_run: bool, kind: str) -> None:
        self.s, self.sid, self.alias, self.dry_run, self.kind = s, sid, alias, dry_run, kind

    def run(self) -> dict[str, int]:
        steps: dict[str, Callable[[], int]] = {
            "provenance": self.provenance,
            "events": self.events,
            "orders": self.orders,
            "items": self.items,
            "parts": lambda: self.rename(Part, Part.submitted_by_agent_id),
            "tokens_revoked": self.tokens,
            "ui_sessions": lambda: self.drop(UiSession, UiSession.principal == self.sid),
            "idempotency_keys": self.stored_answers,
            # the agent's token buckets ("<limit>@<capacity>/<rate>:agent:<id>",
            # ratelimit/rules.py); a full bucket has no row
            "rate_buckets": lambda: self.drop(
                RateBucket, RateBucket.key.endswith(f":agent:{self.sid}", autoescape=True)
            ),
        }
        return {name: step() for name, step in steps.items()}

    def mentions(self, column: Any) -> ColumnElement[bool]:
        """Rows whose column (JSON as its text) contains the id, in any JSON spelling."""
        forms = {
            self.sid,
            json.dumps(self.sid)[1:-1],
            json.dumps(self.sid, ensure_ascii=False)[1:-1],
        }
        text = cast(column, Text)
        return or_(*(text.contains(form, autoescape=True) for form in forms))

    def rewrite(
        self,
        model: Any,
        columns: tuple[str, ...],
        where: ColumnElement[bool],
        change: Callable[[tuple[Any, ...]], tuple[Any, ...]],
        locked: bool = False,
    ) -> int:
        """Rewrite ``columns`` of the rows ``where`` selects with ``change``, :data:`BATCH`
        rows at a time in primary-key order, and count the rows it changes. The rows are
        read as tuples and written back by key, never held as ORM objects: forgetting an
        agent with 100,000 provenance rows held them all (and their snapshots) in the
        session, 515 MB. Still one transaction. ``locked``: each batch is read ``FOR
        UPDATE``, so no row changes between its read and its write."""
        key = model.__mapper__.primary_key[0]
        read = select(key, *(getattr(model, c) for c in columns)).where(where).order_by(key)
        if locked:
            read = read.with_for_update()
        changed, last = 0, None
        while batch := self.s.execute(
            read.limit(BATCH) if last is None else read.where(key > last).limit(BATCH)
        ).all():
            writes = []
            for row in batch:
                old = tuple(row[1:])
                new = change(old)
                if new != old:
                    writes.append({key.key: row[0], **dict(zip(columns, new, strict=True))})
            changed += len(writes)
            if writes and not self.dry_run:
                self.s.execute(update(model), writes)
            last = batch[-1][0]
        return changed

    def swap(self, value: Any) -> Any:
        """The pseudonym for the id, anything else as it is."""
        return self.alias if value == self.sid else value

    def provenance(self) -> int:
        traces = tuple(None for _ in REQUEST_TRACES)

        def anonymised(row: tuple[Any, ...]) -> tuple[Any, ...]:
            descriptive = row[1 + len(REQUEST_TRACES) :]
            kept = tuple(None if self.sid in (v or "") else v for v in descriptive)
            return (self.swap(row[0]), *traces, *kept)

        columns = ("agent_id", *REQUEST_TRACES, *DESCRIPTIVE)
        named = or_(Provenance.agent_id == self.sid, Provenance.principal == self.sid)
        return self.rewrite(Provenance, columns, named, anonymised)

    def events(self) -> int:
        return self.rewrite(
            Event,
            ("actor_id", "payload", "message"),
            or_(
                Event.actor_id == self.sid,
                self.mentions(Event.payload),
                Event.message.contains(self.sid, autoescape=True),
            ),
            lambda row: (
                self.swap(row[0]),
                scrub(row[1], self.sid, self.alias),
                scrub(row[2], self.sid, self.alias),
            ),  # unchanged when the id stands only inside a longer id or word
        )

    def orders(self) -> int:
        """Who requested the order, and a rejection's words (a reviewer's, no work of
        the agent's); a failed order's ``last_error`` is its item's error: the work."""

        def rejection(error: Any) -> Any:
            # a failed order's error names its item (transitions.order_error), whatever
            # code the agent gave it ("rejected" too); a rejection's does not
            rejected = isinstance(error, dict) and error.get("code") == "rejected"
            rejected = rejected and "item_id" not in error
            return scrub(error, self.sid, self.alias) if rejected else error

        return self.rewrite(
            Order,
            ("requested_by_id", "last_error"),
            or_(Order.requested_by_id == self.sid, self.mentions(Order.last_error)),
            lambda row: (self.swap(row[0]), rejection(row[1])),
        )

    def rename(self, model: Any, column: InstrumentedAttribute[Any]) -> int:
        return self.rewrite(model, (column.key,), column == self.sid, lambda _: (self.alias,))

    def items(self) -> int:
        """The items that name the subject as their holder, locked: a lease granted after
        the count above (the agent still at work, on PostgreSQL) was renamed with them,
        and its holder refused on its own item ("leased by another agent") until it
        expired. Found held now, the erasure is refused whole, as at the start. Only
        items not held are renamed, each read locked: a lease the agent is granted
        while the erasure runs (committed after the look above, which READ COMMITTED
        lets the rename see) keeps its holder's id; its holder can finish it."""
        stmt = select(Item.state).where(Item.leased_by_agent_id == self.sid).with_for_update()
        states = list(self.s.scalars(stmt))
        live = sum(1 for state in states if state in HELD)
        if live and not self.dry_run:
            raise _holding(self.kind, live)
        ended = (Item.leased_by_agent_id == self.sid) & Item.state.not_in(HELD)
        return self.rewrite(Item, ("leased_by_agent_id",), ended, lambda _: (self.alias,), True)

    def tokens(self) -> int:
        now = utcnow()
        return self.rewrite(
            ApiToken,
            ("agent_id", "name", "revoked_at"),
            or_(ApiToken.agent_id == self.sid, ApiToken.name == self.sid),
            lambda row: (self.swap(row[0]), self.swap(row[1]), row[2] or now),
        )

    def stored_answers(self) -> int:
        """Idempotency answers that name the subject: the id replaced in the stored body,
        the key kept (deleting it would let a retry with that key run again: a second
        order). The SQL match is a coarse filter (a substring, and on SQLite any case);
        only a whole id is replaced."""
        return self.rewrite(
            IdempotencyKey,
            ("response_body",),
            self.mentions(IdempotencyKey.response_body),
            lambda row: (scrub(row[0], self.sid, self.alias),),
        )

    def drop(self, model: Any, where: ColumnElement[bool]) -> int:
        count = count_rows(self.s, model, where)
        if count and not self.dry_run:
            self.s.execute(delete(model).where(where))
        return count
