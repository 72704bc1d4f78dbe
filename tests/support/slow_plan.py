"""An order type whose planning waits for a marker file, so a test can kill the control
worker while it holds the proposal (loaded with WORK_MANAGER_ORDER_TYPES)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from workmanager import ApplyContext, Diff, ItemSpec, OrderType, OrderView, Registry


class SlowPlan(OrderType):
    """Planning marks ``plan-start-<pid>`` under WM_TEST_MARKERS, then waits (60 s at most)
    for ``go`` there; one item; not auto-approved."""

    type = "e2e.slowplan"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        markers = Path(os.environ["WM_TEST_MARKERS"])
        (markers / f"plan-start-{os.getpid()}").touch()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (markers / "go").exists():
            time.sleep(0.05)
        return [ItemSpec(input={"order": str(order.id)})]

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff({}, {}, "nothing")


def register(registry: Registry) -> None:
    registry.register(SlowPlan())
