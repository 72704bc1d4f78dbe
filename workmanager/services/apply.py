"""Apply: make an approved order's effect happen, and record it exactly once (SPEC §5).

An apply may be sent more than once for one order (a redelivered task after a worker died,
a retry, two workers at once). Each run first claims the order (the claim, below):
at most one apply body runs at a time, a run that finds a live claim backs off, and only the
claim holder records success or failure — so a duplicate's failure cannot throw away the
holder's success. The *recorded* effect — ``approved → applied → completed``, the stored
diff and the ``applied`` event — happens once. A worker that dies mid-apply leaves a claim
that lapses, and the apply runs again: ``OrderType.apply`` must still be idempotent.

**The claim.** At most one apply body runs per order at a time (SPEC §13).

A run of apply first *claims* the order: in the statement that counts its attempt it sets
``apply_claim`` (a random id) and ``apply_claim_expires_at`` (now + the claim's lifetime),
and only where the order is ``approved`` and **claimable** (no claim, or one that lapsed).
A run that finds a live claim runs nothing and backs off until the claim lapses. The outcome
— success (``approved → completed``) or a failure (``apply_retrying`` / ``apply_failed``) —
is recorded only by the run that **holds** the claim, compared on the claim id in the very
statement or locked transaction that records it, and recording clears the claim. So a
duplicate delivery can neither run the body beside the holder nor record ``failed`` over
its success.

The claim's lifetime is ``APPLY_RECOVERY_SECONDS``, and it is renewed while the body runs
(:class:`~workmanager.services.claim_renewer.ClaimRenewer`: one thread per process pushes
each running body's claim out every third of its lifetime), so a long apply keeps its
claim. When the worker dies the renewals stop with it and the claim lapses; maintenance
then sends the apply again (only for orders whose claim has lapsed or never existed). A
body whose claim was lost all the same (its process stalled past the lifetime, the
database unreachable for that long) may be overtaken by another run: it then records
nothing, and ``OrderType.apply`` must be idempotent as before.

The rule is written here for SQLite's store (SQLAlchemy expressions: ``db/orm_orders.py``,
``db/orm_order_admin.py``) and once in ``db/sql/queries.sql`` for PostgreSQL's
(``apply_claimable``: the guard of ``start_apply`` and of the stuck applies'
``claim_stale``), the two held to the same answers by
``tests/integration/test_control_one_path.py`` and ``test_apply_claim.py``.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_
from sqlalchemy.sql.elements import ColumnElement

from .. import deployment, tracing
from ..db.models import Order
from ..db.order_store import OrderRow, build_order_store
from ..diff import Diff
from ..errors import ApplyFailed, IllegalStateTransition
from ..jsonvalues import failure_text, json_value
from ..patience import Patience
from ..settings import Settings
from ..states import OrderState
from ..types import Actor, ApplyContext, OrderView, as_id
from ..usercode import USER_CODE_FAILURES, stopped_by_signal
from .claim_renewer import ClaimRenewer
from .context import ServiceContext
from .transitions import doubled
from .views import order_dict


def new_claim() -> str:
    """A fresh claim id for one run of apply."""
    return str(uuid.uuid4())


def lifetime(settings: Settings) -> timedelta:
    """How long a claim lives unless renewed (``APPLY_RECOVERY_SECONDS``)."""
    return timedelta(seconds=settings.apply_recovery_seconds)


def claimable(now: datetime) -> ColumnElement[bool]:
    """The order has no live claim: never claimed, released, or lapsed."""
    return or_(Order.apply_claim.is_(None), Order.apply_claim_expires_at <= now)


def held_by(claim: str) -> ColumnElement[bool]:
    """The order's claim is this run's (it has not lapsed and been taken by another)."""
    return Order.apply_claim == claim


def taken(claim: str, now: datetime, settings: Settings) -> dict[str, object]:
    """The column values that claim the order for this run."""
    return {"apply_claim": claim, "apply_claim_expires_at": now + lifetime(settings)}


#: Column values that clear the claim, set when its holder records the outcome.
RELEASED: dict[str, object] = {"apply_claim": None, "apply_claim_expires_at": None}

# PostgreSQL's apply statements write the same rule in SQL (``db/sql/queries.sql``:
# ``start_apply`` claims when claimable, ``record_apply`` only for the holder and clears
# the claim); tests/integration/test_apply_claim.py runs both stores through it.


def failures(last_error: Any) -> int:
    """The recorded failures of an order's apply so far, from its ``last_error`` (each
    failure stores the count): the runs that raised, not those their process's end cut
    short (a stop, a kill: no attempt of the retry budget, which a rolling restart spent).
    A failure recorded before the count existed (a row from an older version, or written
    by an old worker during a rolling deploy) counts as its run's ``attempt``, as the
    budget was counted then: an upgrade never gives an order's retries back."""
    if isinstance(last_error, dict) and last_error.get("code") == "apply_failed":
        for said in (last_error.get("failures"), last_error.get("attempt")):
            if isinstance(said, int) and not isinstance(said, bool) and said >= 0:
                return said
    return 0


def seconds_left(expires: datetime | None, now: datetime) -> float:
    """Seconds until a live claim lapses (0 when it has)."""
    if expires is None:
        return 0.0
    return max((expires - now).total_seconds(), 0.0)


log = logging.getLogger("workmanager.apply")
#: How a run that holds the claim records its outcome while the database is away.
RECORDING = Patience("record")


DONE = (OrderState.APPLIED, OrderState.COMPLETED)


@dataclass(frozen=True)
class ApplyOutcome:
    order: dict[str, Any]
    diff: dict[str, Any] | None
    recorded: bool  # False when another run had already recorded the apply
    #: Set when another run holds the apply claim: nothing ran here; seconds until the
    #: claim lapses (the Celery task tries again then).
    retry_after: float | None = None


class ApplyService:
    """Runs ``before_apply → apply → after_apply`` and records the result once."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        #: The apply's claim, record and failure, one path per database (db/order_store.py).
        self.store = build_order_store(ctx)
        self.renewer = ClaimRenewer(ctx, self.store.renew_apply, lifetime(ctx.settings))
        #: settings and clock compared with the deployment's (at start, then every ten seconds)
        self.in_step = deployment.InStep(ctx.db, ctx.settings)

    @tracing.traced("workmanager.apply", tracing.order_call)
    def apply(self, order_id: uuid.UUID | str, actor: Actor | None = None) -> ApplyOutcome:
        """Apply an approved order. Raises :class:`ApplyFailed` when the type's apply raised;
        the failure is recorded, and the order is ``failed`` once retries are spent.

        Both steps are the order store's (``start_apply``, ``record_apply``); the outcome
        of a step that found the order elsewhere is named from its row by
        :func:`_not_started` and :func:`_not_recorded`."""
        order_id = as_id(order_id, "order")
        actor = actor or Actor.system()
        self.in_step()  # the claim is judged by this process's clock: two runs at once
        claim = new_claim()
        now = self.ctx.clock()
        started = self.store.start_apply(order_id, claim, now)
        if isinstance(started, OrderRow):
            return _not_started(started, now)
        view, ctx = started
        # Runs that ended with their process (os._exit, a signal, a time limit, memory)
        # record nothing (the runs before this one, less those that raised); the retries
        # allow twice as many, for a run overtaken after a stall (its claim lapsed while it
        # ran), then the order fails without a run.
        ended = ctx.attempt - 1 - ctx.failures
        if ended >= 2 * (self.ctx.settings.apply_max_retries + 1):
            lost = RuntimeError(
                f"{ended} runs of apply ended without an outcome: the process died"
                " or stalled (os._exit, a signal, a time limit, memory); twice the runs"
                " APPLY_MAX_RETRIES allows"
            )
            log.error("apply of %s failed for good: %s", order_id, lost)
            self.record_failure(order_id, lost, ctx, claim, final=True)
            raise ApplyFailed(
                f"apply of {order_id} failed: {lost}",
                details={"exception": "RuntimeError", "attempt": ctx.attempt, "final": True},
            )
        t0 = time.perf_counter()
        try:
            # Inside the try: a type that is no longer registered is a recorded failure too,
            # not an order left approved for ever.
            order_type = self.ctx.registry.get(view.type)
            with self.renewer.holding(order_id, claim):
                order_type.before_apply(view)
                diff = order_type.apply(view, ctx)
            if not isinstance(diff, Diff):
                raise TypeError(f"{order_type!r}.apply() must return a Diff, got {diff!r}")
            json_value(diff.to_dict(), "the diff")  # stored as JSON: fail here, recorded
            took = time.perf_counter() - t0  # the body's time, not the recording's waits
        except USER_CODE_FAILURES as exc:
            if stopped_by_signal(exc):  # not an attempt: the claim lapses, the apply is re-sent
                raise
            log.warning("apply of %s raised (attempt %d)", order_id, ctx.attempt, exc_info=True)
            final = self.record_failure(order_id, exc, ctx, claim)
            raise ApplyFailed(
                f"apply of {order_id} failed: {exc}",
                details={
                    "exception": type(exc).__name__,
                    "attempt": ctx.attempt,
                    "failures": ctx.failures + 1,
                    "final": final,
                },
            ) from exc
        # The body ran: a database away for a moment is waited for (the claim is this
        # run's), not left to the task's retry, whose new claim met this one's and backed
        # off until it lapsed (the order approved for APPLY_RECOVERY_SECONDS).
        row, stored = RECORDING.call(
            lambda: self.store.record_apply(order_id, claim, diff, actor),
            f"the apply of {order_id}",
            log,
        )
        if stored is None:
            outcome = _not_recorded(row)
        else:
            outcome = ApplyOutcome(order_dict(row), stored, recorded=True)
        if outcome.recorded:
            self.ctx.metrics.histogram("order_apply_duration_seconds", took, type=view.type)
            self._after(order_type.after_apply, view, diff)
        return outcome

    def _after(self, hook: Any, view: OrderView, diff: Diff) -> None:
        try:
            hook(view, diff)
        except USER_CODE_FAILURES:  # the apply is recorded; a failing after-hook must not undo it
            log.exception("after_apply of %s raised", view.id)

    def record_failure(
        self,
        order_id: uuid.UUID,
        exc: BaseException,
        ctx: ApplyContext,
        claim: str,
        final: bool | None = None,
    ) -> bool:
        """Record a failed apply attempt of the run holding ``claim``; fail the order once
        retries are spent: more failures recorded than ``APPLY_MAX_RETRIES`` (runs a
        stop or a kill cut short are none). The claim is released, so the retry can claim
        it at once.

        Returns True when the order is now ``failed``; False also when nothing was recorded
        (the order moved on, or this run's claim lapsed and another run holds it)."""
        failed = ctx.failures + 1
        if final is None:
            final = failed > self.ctx.settings.apply_max_retries
        said = failure_text(exc, 2000)  # a NUL in it refused the record: the order stuck
        info = {
            "exception": type(exc).__name__,
            "message": said,
            "attempt": ctx.attempt,
            "failures": failed,
        }
        change = RECORDING.call(
            lambda: self.store.fail_apply(order_id, claim, info, final, Actor.system()),
            f"the failed apply of {order_id}",
            log,
        )
        if not change.done:
            return False
        if final:
            self.ctx.metrics.increment(
                "orders_apply_failed_total", type=change.order.type, exception=info["exception"]
            )
        return final

    def retry_delay(self, attempt: int) -> float:
        """Seconds before the retry after failure ``attempt``: the backoff doubles each time, up
        to a second short of ``APPLY_RECOVERY_SECONDS``. A longer wait left the order
        ``approved`` and untouched past maintenance's window, which sent the apply again
        before the retry was due (retries ran early, the order failed in half the time)."""
        settings = self.ctx.settings
        ceiling = max(settings.apply_recovery_seconds - 1.0, 0.0)
        return min(doubled(settings.apply_retry_backoff_seconds, attempt), ceiling)


def _not_started(current: OrderRow, now: datetime) -> ApplyOutcome:
    """The outcome of an apply whose claim found the order elsewhere (``current``, as it
    is now): already done, claimed by another run (back off until the claim lapses), or
    not approved (:class:`IllegalStateTransition`)."""
    if current.state in DONE:
        return ApplyOutcome(order_dict(current), current.diff, recorded=False)
    if current.state == OrderState.APPROVED:  # another run holds a live claim
        left = seconds_left(current.apply_claim_expires_at, now)
        log.info("apply of %s is claimed by another run; backing off", current.id)
        return ApplyOutcome(order_dict(current), None, recorded=False, retry_after=left)
    raise IllegalStateTransition(
        kind="order", from_state=current.state, to_state=OrderState.APPLIED
    )


def _not_recorded(current: OrderRow) -> ApplyOutcome:
    """The outcome of a record that found the order elsewhere (another run recorded it,
    it failed, or this run's claim was taken): nothing recorded here."""
    return ApplyOutcome(order_dict(current), current.diff, recorded=False)
