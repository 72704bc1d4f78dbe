"""The apply claim: at most one apply body runs per order at a time (SPEC §13).

A run of apply first *claims* the order: in the statement that counts its attempt it sets
``apply_claim`` (a random id) and ``apply_claim_expires_at`` (now + the claim's lifetime),
and only where the order is ``approved`` and **claimable** (no claim, or one that lapsed).
A run that finds a live claim runs nothing and backs off until the claim lapses. The outcome
— success (``approved → completed``) or a failure (``apply_retrying`` / ``apply_failed``) —
is recorded only by the run that **holds** the claim, compared on the claim id in the very
statement or locked transaction that records it, and recording clears the claim. So a
duplicate delivery can neither run the body beside the holder nor record ``failed`` over
its success.

The claim's lifetime is ``APPLY_RECOVERY_SECONDS``, which operators already set above their
longest apply; when the worker dies the claim lapses with it, and maintenance sends the apply
again (only for orders whose claim has lapsed or never existed). An apply that outlives its
claim may be overtaken by another run: it then records nothing, and ``OrderType.apply`` must
be idempotent as before.

The rule is written here for SQLite's store (SQLAlchemy expressions: ``db/orm_orders.py``,
``db/orm_order_admin.py``) and once in ``db/sql/queries.sql`` for PostgreSQL's
(``apply_claimable``: the guard of ``start_apply`` and of the stuck applies'
``claim_stale``), the two held to the same answers by
``tests/integration/test_control_one_path.py`` and ``test_apply_claim.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import or_
from sqlalchemy.sql.elements import ColumnElement

from ..db.models import Order
from ..settings import Settings


def new_claim() -> str:
    """A fresh claim id for one run of apply."""
    return str(uuid.uuid4())


def lifetime(settings: Settings) -> timedelta:
    """How long a claim lives: above the longest normal apply (``APPLY_RECOVERY_SECONDS``)."""
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


def seconds_left(expires: datetime | None, now: datetime) -> float:
    """Seconds until a live claim lapses (0 when it has)."""
    if expires is None:
        return 0.0
    return max((expires - now).total_seconds(), 0.0)
