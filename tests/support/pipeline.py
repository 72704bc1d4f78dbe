"""Order types and agent handlers for the Celery end-to-end tests.

Loaded in worker subprocesses through WORK_MANAGER_ORDER_TYPES=tests.support.pipeline.
The slow apply writes marker files under WM_TEST_MARKERS so a test can see (and kill)
a worker in the middle of it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from workmanager import ApplyContext, Diff, Lease, OrderType, OrderView, Registry
from workmanager.types import JSON, ItemView


class Echo(OrderType):
    """One item; auto-approved; apply echoes the results."""

    type = "e2e.echo"
    auto_approve = True

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff({}, {"results": [i.result for i in order.items]}, "echoed")


class SlowApply(OrderType):
    """Auto-approved; apply marks its start, sleeps, then marks its end."""

    type = "e2e.slow"
    auto_approve = True

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        markers = Path(os.environ["WM_TEST_MARKERS"])
        (markers / f"apply-start-{order.id}-{ctx.attempt}").touch()
        time.sleep(float(os.environ.get("WM_TEST_APPLY_SECONDS", "3")))
        (markers / f"apply-end-{order.id}-{ctx.attempt}").touch()
        return Diff({}, {"done": True}, "slow")


def register(registry: Registry) -> None:
    registry.register(Echo())
    registry.register(SlowApply())


def echo_handler(item: ItemView, lease: Lease) -> JSON:
    return {"echo": item.input, "token": lease.fence}
