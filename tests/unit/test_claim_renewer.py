"""The apply claim's renewals (``services/apply.py`` ``ClaimRenewer``) when the host's clock
steps while a body runs. Found by a clock-skew pass: a worker whose clock stepped back an
hour renewed its claim to an expiry already past by every other host's clock, and another
worker started the same apply beside it (SPEC §13: one body per order at a time)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from workmanager import Settings
from workmanager.services.claim_renewer import ClaimRenewer, elapsed_clock


def test_renewals_follow_the_monotonic_clock_not_a_stepped_wall_clock() -> None:
    start = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    wall = {"now": start}
    settings = Settings(database_url="sqlite://", apply_recovery_seconds=1)
    ctx = SimpleNamespace(clock=lambda: wall["now"], settings=settings)
    renewed: list[datetime] = []
    twice = threading.Event()

    def renew(order_id: uuid.UUID, claim: str, expires: datetime) -> bool:
        renewed.append(expires)
        if len(renewed) >= 2:
            twice.set()
        return True

    renewer = ClaimRenewer(ctx, renew, timedelta(seconds=1))  # type: ignore[arg-type]
    began = elapsed_clock()
    with renewer.holding(uuid.uuid4(), "claim-1"):
        wall["now"] = start - timedelta(hours=1)  # the host's clock steps back an hour
        assert twice.wait(10), renewed
        elapsed = timedelta(seconds=elapsed_clock() - began)
    for expires in renewed:
        assert start < expires <= start + elapsed + timedelta(seconds=1), (expires, start)
