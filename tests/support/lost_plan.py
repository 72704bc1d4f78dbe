"""Order types whose planning ends the worker's process (loaded with
WORK_MANAGER_ORDER_TYPES): ``e2e.exits`` every time, ``e2e.exits_once`` on its first
run only; ``e2e.slow`` plans for 12 s. Each run leaves a ``plan-<type>-<pid>-<n>``
marker under WM_TEST_MARKERS."""

from __future__ import annotations

import os
import time
from pathlib import Path

from workmanager import ApplyContext, Diff, ItemSpec, OrderType, OrderView, Registry


def _mark(kind: str) -> Path:
    markers = Path(os.environ["WM_TEST_MARKERS"])
    (markers / f"plan-{kind}-{os.getpid()}-{time.monotonic_ns()}").touch()
    return markers


class Exits(OrderType):
    type = "e2e.exits"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        _mark(self.type)
        os._exit(3)

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff({}, {}, "nothing")


class ExitsOnce(Exits):
    type = "e2e.exits_once"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        markers = _mark(self.type)
        if not (markers / "exited").exists():
            (markers / "exited").touch()
            os._exit(3)
        return [ItemSpec(input={"n": 1})]


class Slow(Exits):
    """Plans for 12 s (long enough for the broker's connections to drop under it)."""

    type = "e2e.slow"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        _mark(self.type)
        time.sleep(12)
        return [ItemSpec(input={"n": 1})]


def register(registry: Registry) -> None:
    registry.register(Exits())
    registry.register(ExitsOnce())
    registry.register(Slow())
