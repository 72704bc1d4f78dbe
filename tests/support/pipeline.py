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


class Strict(Echo):
    """Echo with a payload schema: ``{"n": integer}``, nothing else."""

    type = "e2e.strict"

    def schema(self) -> JSON:
        return {
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
            "additionalProperties": False,
        }


def register(registry: Registry) -> None:
    registry.register(Echo())
    registry.register(SlowApply())
    registry.register(Strict())


def echo_handler(item: ItemView, lease: Lease) -> JSON:
    return {"echo": item.input, "token": lease.fence}


def gated_handler(item: ItemView, lease: Lease) -> JSON:
    """Marks ``handler-start-<item>`` under WM_TEST_MARKERS, then works until the file
    ``go-<item>`` (or ``go-all``) exists there, at most ``input["max"]`` seconds (60)."""
    markers = Path(os.environ["WM_TEST_MARKERS"])
    (markers / f"handler-start-{item.id}-{os.getpid()}").touch()
    limit = item.input.get("max", 60) if isinstance(item.input, dict) else 60
    deadline = time.monotonic() + float(limit)
    while time.monotonic() < deadline:
        if (markers / f"go-{item.id}").exists() or (markers / "go-all").exists():
            break
        time.sleep(0.05)
    (markers / f"handler-end-{item.id}-{os.getpid()}").touch()
    return {"echo": item.input, "token": lease.fence}
