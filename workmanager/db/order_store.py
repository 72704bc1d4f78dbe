"""The control plane's port: one write path per database for the order's state changes.

The control plane's state changes (propose's insert, a refused proposal's record, approval
by hand or automatic, reject and rework, retry of an order or an item, requeue's unblock,
apply's claim, record and failure, dead-lettering, pruning, maintenance's touches, an event
alone) are the :class:`OrderStore` port, the same shape: chosen once by
:func:`build_order_store` (:class:`workmanager.db.postgres.control.PostgresOrderStore` on
PostgreSQL, :class:`workmanager.db.orm_orders.OrmOrderStore` otherwise), asked by the
services (:class:`~workmanager.services.orders.OrderService`,
:class:`~workmanager.services.admin.OrderAdmin`,
:class:`~workmanager.services.admin.ItemAdmin`,
:class:`~workmanager.services.apply.ApplyService`,
:class:`~workmanager.services.maintenance.Maintenance`, ``Housekeeping``), which keep the
rules that name an outcome (``_ready``, ``retry_target``, ``refused``, ``retryable``,
``droppable``, ``_not_started``, ``_not_recorded``, the apply claim of
:mod:`workmanager.services.apply`). Orders come back as :class:`OrderRow`, a frozen
copy of the row; an admin change as :class:`OrderChange`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import Unavailable

if TYPE_CHECKING:
    from ..diff import Diff
    from ..services.context import ServiceContext
    from ..types import Actor, AgentInfo, ApplyContext, OrderView
    from .models import Item, Order


#: How many times an insert whose id or dedupe key was taken is tried again when the row
#: that took it is gone before it is read (a refused proposal's record dropped meanwhile by
#: a corrected proposal with the same key): the raw unique violation was a 500.
TAKEN_TRIES = 5

Made = TypeVar("Made")
Holder = TypeVar("Holder")


def inserted_or_held(
    insert: Callable[[], Made],
    holder: Callable[[], Holder | None],
    taken: type[Exception] | tuple[type[Exception], ...],
) -> tuple[Made | None, Holder | None]:
    """``(insert(), None)``, or, when the id or key is ``taken``, ``(None, holder())``: the
    row that holds it. Tried again while that row is gone before it is read, up to
    :data:`TAKEN_TRIES` times, then ``Unavailable`` (retryable). Both stores' inserts of a
    proposal and of a refused one's record."""
    for _ in range(TAKEN_TRIES):
        try:
            return insert(), None
        except taken:
            found = holder()
            if found is not None:
                return None, found
    raise Unavailable(
        "the order's id or dedupe key was taken and freed again while it was proposed",
        hint="send the proposal again",
    )


@dataclass(frozen=True)
class OrderRow:
    """An order's row as it was read (every column of ``work_orders``, datetimes in UTC):
    what the order store returns, and what ``order_dict`` and the outcome rules read."""

    id: uuid.UUID
    type: str
    state: str
    priority: int
    payload: dict[str, Any]
    meta: dict[str, Any]
    requested_by_type: str
    requested_by_id: str | None
    dedupe_key: str | None
    tenant_id: str | None
    last_error: dict[str, Any] | None
    apply_attempts: int
    apply_claim: str | None
    apply_claim_expires_at: datetime | None
    diff: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    last_transitioned_at: datetime
    submitted_at: datetime | None
    applied_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def of(cls, order: Order) -> OrderRow:
        """A copy of an ORM order's columns (read inside its transaction)."""
        return cls(**{name: getattr(order, name) for name in ORDER_ROW_FIELDS})


#: The columns an :class:`OrderRow` holds, in order (the PostgreSQL store selects these).
ORDER_ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(OrderRow))

#: What ``approve`` asks of the locked order (a view with its items): True to approve it,
#: False when there is nothing to approve; raises to refuse (``OrderService._ready``, the
#: one rule for both stores).
ApprovalCheck = Callable[["OrderView"], bool]

#: What ``retry`` asks of the locked order and its items' states: the state it goes back
#: to (``submitted`` or ``queued``); raises to refuse (``transitions.retry_target``).
RetryCheck = Callable[[OrderRow, list[str]], str]

#: What ``drop_refused`` asks of the locked order and its items' states: whether it is a
#: refused proposal's record that may be dropped (``refusals.droppable``).
DropCheck = Callable[[OrderRow, list[str]], bool]

#: What ``retry_item`` asks of the locked item (as ``item_dict`` shows it) and the ids of
#: its order's other failed items; raises to refuse (``items.retryable``).
ItemRetryCheck = Callable[[dict[str, Any], list[uuid.UUID]], None]


@dataclass(frozen=True)
class OrderChange:
    """What an admin change did: ``done``, the order as written and the items it put back
    in the queue (by id); or, when its guard matched nothing, ``done`` False, nothing
    written and the order as it is now, from which the service names the error
    (``transitions.refused``)."""

    order: OrderRow
    done: bool
    items: tuple[uuid.UUID, ...] = ()


#: How long after an order was dead-lettered its items left queued are still collected
#: (a held item a row lock kept from the run, released or reclaimed since): dead-lettering
#: looks at the queued items of the orders dead that recently only, never every one kept.
LATE_QUEUED = timedelta(hours=1)


class OrderStore(Protocol):
    """The control plane's state changes that each database writes its own way: one
    transaction per method, the order's state checked by the statement that changes it.
    Each store announces the events it wrote to :mod:`workmanager.events` after its
    commit (the same events in the same order on both), and marks a pending idempotency
    key (:mod:`workmanager.db.claims`) in the same transaction as the write."""

    def create_order(
        self, order: Order, items: list[Item], actor: Actor, agent: AgentInfo | None
    ) -> OrderRow | None:
        """Insert a planned proposal: the order, its items, the ``proposed`` and
        ``planned`` events and (when an agent proposed it) the provenance row — atomically,
        with no read before the insert. ``None`` once created. When the order's id or
        dedupe key is already an order's, the unique index refuses the insert, nothing is
        stored, and the order holding it (the id first, else the key) is returned, read
        after the refusal; ``OrderService.propose`` compares the proposals."""
        ...

    def refuse(self, order: Order, actor: Actor) -> tuple[OrderRow, bool]:
        """Insert a refused proposal's record (``order``: ``failed``, no items) and its
        ``proposal_refused`` event (payload: ``last_error``'s code and details; its
        message), atomically: ``(the order, True)``. When the id is already an order's,
        the unique index refuses the insert, nothing is stored, and ``(that order,
        False)`` comes back, read after the refusal."""
        ...

    def drop_refused(self, order_id: uuid.UUID, check: DropCheck) -> bool:
        """Delete the order when ``check``, asked of the order locked and its items'
        states, says it is a refused proposal's record (so a corrected proposal can take
        its id): True once deleted; False, nothing written, otherwise or when there is
        no such order. One transaction."""
        ...

    def record_event(
        self, order_id: uuid.UUID, event: str, actor: Actor, payload: dict[str, Any]
    ) -> None:
        """Append one event of the order, no state change (e.g. ``auto_approval_refused``):
        a transaction of its own."""
        ...

    def approve(
        self,
        order_id: uuid.UUID,
        plain: list[str],
        check: ApprovalCheck,
        actor: Actor,
        agent: AgentInfo | None = None,
    ) -> OrderRow | None:
        """``submitted → approved``, its ``approved`` event and (with ``agent``) the
        ``approve`` provenance row, atomically: the order approved, or ``None`` when
        ``check`` found nothing to approve. By hand and automatic alike.

        An order of a ``plain`` type (the default ``can_approve``; for auto-approval, also
        ``auto_approve``) is approved by one UPDATE guarded on its state and type, which is
        its lock. Otherwise, or when that guard matched nothing, the order is locked
        (``FOR UPDATE`` on PostgreSQL, the write lock on SQLite) and read with its items,
        ``check`` decides from that view (and raises to refuse: nothing is written), and
        the approval is written in the same transaction. A missing order raises
        :class:`NotFound`."""
        ...

    def reject(
        self,
        order_id: uuid.UUID,
        errors: list[Any],
        actor: Actor,
        rework: bool,
        agent: AgentInfo | None,
    ) -> OrderChange:
        """``submitted → rejected`` with ``last_error`` ``{"code": "rejected", "errors"}``,
        its submitted items ``rejected`` and their parts marked rejected; with ``rework``,
        then those items back to ``queued`` (results, attempts, backoff and parts state
        cleared) and the order to ``queued``. Events: ``rejected`` (payload ``errors``,
        ``allow_rework``), per item (by id) ``rejected``, then with rework per item
        ``rework`` and the order's ``rework``; the ``reject`` provenance row with
        ``agent``. One transaction, guarded on the order's state (its lock); ``items``:
        the reworked items. A refused guard writes nothing (``done`` False)."""
        ...

    def rework(self, order_id: uuid.UUID, actor: Actor) -> OrderChange:
        """A ``rejected`` order back to work: its rejected items to ``queued`` as ``reject``
        reworks them (per item, by id, a ``rework`` event), ``last_error`` cleared, the
        order ``queued`` (event ``rework``). One transaction guarded on the order's state
        (its lock); ``items``: the reworked ones. A refused guard writes nothing."""
        ...

    def unblock(self, order_id: uuid.UUID) -> OrderChange:
        """The order locked and, while it is still queued or in progress, its queued items'
        backoff cleared (leasable now), no event: requeue's last step once the held leases
        are released. ``items``: the queued items; not ``done`` when the order moved on
        since requeue read it (failed, submitted). A missing order raises
        :class:`NotFound`."""
        ...

    def retry(self, order_id: uuid.UUID, check: RetryCheck, actor: Actor) -> OrderChange:
        """A failed order back to work, in one transaction: the order locked and read with
        its items' states, ``check`` names the state it goes to (and raises to refuse:
        nothing is written). ``submitted`` (every item submitted; the apply is retried):
        ``last_error`` cleared, ``apply_attempts`` 0, event ``retried``. ``queued``:
        ``last_error`` cleared, event ``retried``, then its failed items (by id) to
        ``queued`` with error, attempts and backoff cleared, each with a ``retried`` event;
        ``items``: those. A missing order raises :class:`NotFound`."""
        ...

    def retry_item(self, item_id: uuid.UUID, check: ItemRetryCheck, actor: Actor) -> dict[str, Any]:
        """A failed item back to ``queued`` (error, attempts and backoff cleared, event
        ``retried``), and its order with it when the order is ``failed`` (``last_error``
        cleared, event ``retried``), in one transaction: the order locked first, then the
        item, and ``check`` asked of the item and its order's other failed items (it
        raises to refuse: nothing is written). Returns the item (``item_dict``); a missing
        item raises :class:`NotFound`."""
        ...

    def fail_apply(
        self, order_id: uuid.UUID, claim: str, error: dict[str, Any], final: bool, actor: Actor
    ) -> OrderChange:
        """For the claim holder only, atomically: the apply claim released, ``last_error``
        ``{"code": "apply_failed", **error}``, and either (``final``) ``approved → failed``
        with an ``apply_failed`` event or an ``apply_retrying`` event (payload ``error``).
        The guard (state ``approved``, the claim held by ``claim``) is the UPDATE's, the
        order's lock; when it matched nothing (the order moved on, or the claim lapsed and
        was taken) nothing is written (``done`` False). A missing order raises
        :class:`NotFound`."""
        ...

    def dead_letter(self, cutoff: datetime, actor: Actor) -> tuple[int, int]:
        """Failed orders last moved at or before ``cutoff`` to ``dead_lettered`` and, with
        them, every item not done (failed, queued, held: a held one's lease ends first,
        event ``lease_released``); of orders dead before, the failed and held items, and
        the queued ones of those dead for less than :data:`LATE_QUEUED` (a held item a lock
        kept back, released or reclaimed since); each with its event
        (orders first, then items, each by id), in one transaction; rows another
        transaction holds are skipped (``SKIP LOCKED`` on PostgreSQL: an order being
        retried is left whole; an item of a dead-lettered order held back then goes at the
        next run). Returns how many orders and items."""
        ...

    def touch_queued(
        self, order_id: uuid.UUID | None, before: datetime | None, now: datetime, limit: int
    ) -> list[tuple[uuid.UUID, str]]:
        """Queued items a checkout could take now (the eligibility rules), of ``order_id``
        or (without one) untouched since ``before``, oldest touch first, at most ``limit``:
        their ``updated_at`` set to ``now`` (so each is announced again at most once per
        window) in one transaction, no lock waited for beyond the rows' own. Returns their
        ids and order types."""
        ...

    def claim_stuck_applies(self, cutoff: datetime, now: datetime) -> list[uuid.UUID]:
        """Approved orders with no live apply claim (``apply_claim.claimable``) untouched
        since ``cutoff``, at most 1,000, oldest touch first: locked (``SKIP LOCKED``: rows
        another run holds are left to it) and touched ``now`` in one transaction, so the
        next run leaves them alone for a window. Returns their ids."""
        ...

    def claim_stuck_auto_approvals(
        self, cutoff: datetime, now: datetime, types: list[str]
    ) -> list[uuid.UUID]:
        """Submitted orders of ``types`` (the auto-approving ones) with no
        ``auto_approval_refused`` event since their last transition, untouched since
        ``cutoff``: claimed as :meth:`claim_stuck_applies` claims its orders."""
        ...

    def prune(self, order_ids: list[uuid.UUID], states: Sequence[str]) -> tuple[int, int]:
        """Delete those of ``order_ids`` still in one of ``states`` (the state checked by
        the delete: an order retried since it was listed is kept, one another prune
        deleted is not counted); their items, parts, events and provenance go with them
        (foreign-key cascade, the audit trigger). One transaction; returns how many orders
        it deleted and how many items they held."""
        ...

    def prune_audit(
        self, audit: str, cutoff: datetime, limit: int, after: int = 0
    ) -> tuple[int, int]:
        """One batch: at most ``limit`` rows of ``audit`` (``events`` or ``provenance``)
        created before ``cutoff`` deleted, those after id ``after`` in id order, in a
        short transaction of its own; returns how many, and the last id deleted (the next
        batch's ``after``: no batch walks again past the rows kept before it)."""
        ...

    def find(self, order_id: uuid.UUID | None, dedupe_key: str | None) -> OrderRow | None:
        """The order holding ``order_id``, else ``dedupe_key`` (what a proposal with them
        would find), no lock; ``None`` when neither names one."""
        ...

    def start_apply(
        self, order_id: uuid.UUID, claim: str, now: datetime
    ) -> tuple[OrderView, ApplyContext] | OrderRow:
        """Claim an approved order for the run ``claim`` and count its attempt: one
        ``UPDATE … WHERE state = 'approved' AND <claimable>`` (the rule of
        :mod:`workmanager.services.apply`), which is the lock and the check at once —
        it waits for a concurrent run's transaction and re-checks what it committed. Then
        the order is read with its items: the view and context for the hooks. When the
        guard matched nothing (not approved, or another run holds a live claim), nothing is
        written and the order as it is now is returned (``_not_started`` names the
        outcome); a missing order raises :class:`NotFound`."""
        ...

    def renew_apply(self, order_id: uuid.UUID, claim: str, expires: datetime) -> bool:
        """Move the claim ``claim``'s expiry to ``expires`` while its apply body runs, in
        one ``UPDATE`` guarded on the claim being that run's and the order ``approved``.
        False when it is not (taken after it lapsed, or recorded): nothing written."""
        ...

    def record_apply(
        self, order_id: uuid.UUID, claim: str, diff: Diff, actor: Actor
    ) -> tuple[OrderRow, dict[str, Any] | None]:
        """For the claim holder only, atomically: ``approved → completed`` with the diff
        (and ``applied_at``, the claim released), the submitted items ``accepted →
        completed``, and the events ``applied``, per item ``accepted`` and ``completed``,
        then ``completed`` — in that order. The guard (state ``approved`` and the claim
        held by ``claim``) is the UPDATE's, the order's lock. Returns the order and the
        diff stored; when the guard matched nothing (another run recorded it, the order
        failed, or the claim lapsed and was taken), nothing is written and the order as it
        is now comes back with ``None`` (``_not_recorded``). A missing order raises
        :class:`NotFound`."""
        ...


def build_order_store(ctx: ServiceContext) -> OrderStore:
    """PostgreSQL's control-plane statements on PostgreSQL; the ORM's otherwise
    (SQLite). Chosen once, never a fallback for each other."""
    if ctx.db.is_postgres:
        from .postgres.control import PostgresOrderStore

        return PostgresOrderStore(ctx)
    from .orm_orders import OrmOrderStore

    return OrmOrderStore(ctx)
