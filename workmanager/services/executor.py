"""Apply: make an approved order's effect happen, and record it exactly once (SPEC §5).

An apply may be sent more than once for one order (a redelivered task after a worker died,
a retry, two workers at once). Each run first claims the order (``services/apply_claim.py``):
at most one apply body runs at a time, a run that finds a live claim backs off, and only the
claim holder records success or failure — so a duplicate's failure cannot throw away the
holder's success. The *recorded* effect — ``approved → applied → completed``, the stored
diff and the ``applied`` event — happens once. A worker that dies mid-apply leaves a claim
that lapses, and the apply runs again: ``OrderType.apply`` must still be idempotent.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import tracing
from ..db.order_store import OrderRow, build_order_store
from ..diff import Diff
from ..errors import ApplyFailed, IllegalStateTransition
from ..jsonvalues import json_value
from ..states import OrderState
from ..types import Actor, OrderView
from . import apply_claim
from .context import ServiceContext
from .views import order_dict

log = logging.getLogger("workmanager.apply")

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

    @tracing.traced("workmanager.apply", tracing.order_call)
    def apply(self, order_id: uuid.UUID, actor: Actor | None = None) -> ApplyOutcome:
        """Apply an approved order. Raises :class:`ApplyFailed` when the type's apply raised;
        the failure is recorded, and the order is ``failed`` once retries are spent.

        Both steps are the order store's (``start_apply``, ``record_apply``); the outcome
        of a step that found the order elsewhere is named from its row by
        :func:`_not_started` and :func:`_not_recorded`."""
        actor = actor or Actor.system()
        claim = apply_claim.new_claim()
        now = self.ctx.clock()
        started = self.store.start_apply(order_id, claim, now)
        if isinstance(started, OrderRow):
            return _not_started(started, now)
        view, ctx = started
        t0 = time.perf_counter()
        try:
            # Inside the try: a type that is no longer registered is a recorded failure too,
            # not an order left approved for ever.
            order_type = self.ctx.registry.get(view.type)
            order_type.before_apply(view)
            diff = order_type.apply(view, ctx)
            if not isinstance(diff, Diff):
                raise TypeError(f"{order_type!r}.apply() must return a Diff, got {diff!r}")
            json_value(diff.to_dict(), "the diff")  # stored as JSON: fail here, recorded
        except Exception as exc:
            final = self.record_failure(order_id, exc, ctx.attempt, claim)
            raise ApplyFailed(
                f"apply of {order_id} failed: {exc}",
                details={"exception": type(exc).__name__, "attempt": ctx.attempt, "final": final},
            ) from exc
        row, stored = self.store.record_apply(order_id, claim, diff, actor)
        if stored is None:
            outcome = _not_recorded(row)
        else:
            outcome = ApplyOutcome(order_dict(row), stored, recorded=True)
        if outcome.recorded:
            self.ctx.metrics.histogram(
                "order_apply_duration_seconds", time.perf_counter() - t0, type=view.type
            )
            self._after(order_type.after_apply, view, diff)
        return outcome

    def _after(self, hook: Any, view: OrderView, diff: Diff) -> None:
        try:
            hook(view, diff)
        except Exception:  # the apply is recorded; a failing after-hook must not undo it
            log.exception("after_apply of %s raised", view.id)

    def record_failure(
        self, order_id: uuid.UUID, exc: BaseException, attempt: int, claim: str
    ) -> bool:
        """Record a failed apply attempt of the run holding ``claim``; fail the order once
        retries are spent. The claim is released, so the retry can claim it at once.

        Returns True when the order is now ``failed``; False also when nothing was recorded
        (the order moved on, or this run's claim lapsed and another run holds it)."""
        final = attempt > self.ctx.settings.apply_max_retries
        info = {"exception": type(exc).__name__, "message": str(exc)[:2000], "attempt": attempt}
        change = self.store.fail_apply(order_id, claim, info, final, Actor.system())
        if not change.done:
            return False
        if final:
            self.ctx.metrics.increment(
                "orders_apply_failed_total", type=change.order.type, exception=info["exception"]
            )
        return final

    def retry_delay(self, attempt: int) -> float:
        """Seconds before apply attempt ``attempt + 1``: the backoff doubles each time."""
        return float(self.ctx.settings.apply_retry_backoff_seconds * 2.0 ** max(attempt - 1, 0))


def _not_started(current: OrderRow, now: datetime) -> ApplyOutcome:
    """The outcome of an apply whose claim found the order elsewhere (``current``, as it
    is now): already done, claimed by another run (back off until the claim lapses), or
    not approved (:class:`IllegalStateTransition`)."""
    if current.state in DONE:
        return ApplyOutcome(order_dict(current), current.diff, recorded=False)
    if current.state == OrderState.APPROVED:  # another run holds a live claim
        left = apply_claim.seconds_left(current.apply_claim_expires_at, now)
        log.info("apply of %s is claimed by another run; backing off", current.id)
        return ApplyOutcome(order_dict(current), None, recorded=False, retry_after=left)
    raise IllegalStateTransition(
        kind="order", from_state=current.state, to_state=OrderState.APPLIED
    )


def _not_recorded(current: OrderRow) -> ApplyOutcome:
    """The outcome of a record that found the order elsewhere (another run recorded it,
    it failed, or this run's claim was taken): nothing recorded here."""
    return ApplyOutcome(order_dict(current), current.diff, recorded=False)
