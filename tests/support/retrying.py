"""An order type whose apply fails a set number of times, for the Celery retry tests.

Loaded in worker subprocesses through WORK_MANAGER_ORDER_TYPES. Each apply attempt writes
the time it started to a marker file under WM_TEST_MARKERS, so a test can measure the
countdowns between attempts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from workmanager import ApplyContext, Diff, OrderType, OrderView, Registry


class Retrying(OrderType):
    """One item. Apply fails while its attempt number is at most ``payload["fail"]``."""

    type = "e2e.retrying"

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        marker = Path(os.environ["WM_TEST_MARKERS"]) / f"attempt-{order.id}-{ctx.attempt}"
        marker.write_text(repr(time.time()))
        if ctx.attempt <= int(order.payload.get("fail", 0)):
            raise RuntimeError(f"downstream down (attempt {ctx.attempt})")
        return Diff({}, {"attempt": ctx.attempt}, "applied after retries")


def register(registry: Registry) -> None:
    registry.register(Retrying())
