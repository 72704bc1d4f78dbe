"""Order types for tests: small, each exercising a group of hooks."""

from __future__ import annotations

import threading
import time
from typing import Any

from workmanager import ApplyContext, Diff, ItemSpec, OrderType, OrderView, ValidationFailed
from workmanager.types import JSON, ItemView


class Simple(OrderType):
    """One item; the result must carry ``answer``; apply counts its calls."""

    type = "test.simple"

    def __init__(self, auto: bool = False) -> None:
        self.auto_approve = auto  # type: ignore[misc]
        self.apply_calls = 0
        self.after_calls = 0
        self.lock = threading.Lock()

    def schema(self) -> JSON:
        return {
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 0}, "name": {"type": "string"}},
        }

    def result_schema(self, item: ItemView) -> JSON:
        return {"type": "object", "required": ["answer"]}

    def validate_submission(self, item: ItemView, result: JSON) -> None:
        if result.get("answer") == "forbidden":
            raise ValidationFailed(
                [{"path": "result.answer", "message": "not allowed", "validator": "custom"}]
            )

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        with self.lock:
            self.apply_calls += 1
        return Diff({}, {"answers": [i.result for i in order.items]}, "applied")

    def after_apply(self, order: OrderView, diff: Diff) -> None:
        with self.lock:
            self.after_calls += 1


class Multi(OrderType):
    """``count`` items from the payload."""

    type = "test.multi"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        return [ItemSpec(input={"i": i}) for i in range(order.payload.get("count", 2))]

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


class Parts(OrderType):
    """One item needing parts ``a`` and ``b``; part ``a`` must hold an integer ``v``."""

    type = "test.parts"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        return [ItemSpec(input={}, parts_required=["a", "b"])]

    def part_schema(self, item: ItemView, part_key: str) -> JSON | None:
        if part_key == "a":
            return {"type": "object", "required": ["v"], "properties": {"v": {"type": "integer"}}}
        return None

    def validate_assembled(self, item: ItemView, result: JSON) -> None:
        if result.get("b", {}).get("bad"):
            raise ValidationFailed([{"path": "b", "message": "bad", "validator": "custom"}])

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


class Flaky(OrderType):
    """Apply fails the first ``failures`` times."""

    type = "test.flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"downstream down (call {self.calls})")
        return Diff({"v": 0}, {"v": 1}, "ok")


class Picky(OrderType):
    """``can_approve`` is false unless the payload says ``ok``."""

    type = "test.picky"
    auto_approve = True

    def can_approve(self, order: OrderView) -> bool:
        return bool(order.payload.get("ok"))

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


def all_types(**kwargs: Any) -> list[OrderType]:
    return [Simple(), Multi(), Parts(), Flaky(kwargs.get("failures", 1)), Picky()]


class Slow(OrderType):
    """Apply sleeps a little (so two concurrent applies overlap) and counts its calls."""

    type = "test.slow"

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self.apply_calls = 0
        self.after_calls = 0
        self.lock = threading.Lock()

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        with self.lock:
            self.apply_calls += 1
        time.sleep(self.delay)
        return Diff({"count": 0}, {"count": 1}, "slow apply")

    def after_apply(self, order: OrderView, diff: Diff) -> None:
        with self.lock:
            self.after_calls += 1


class Hooked(OrderType):
    """No result schema; ``validate_submission`` alone decides, and counts its calls."""

    type = "test.hooked"

    def __init__(self) -> None:
        self.validated: list[JSON] = []

    def validate_submission(self, item: ItemView, result: JSON) -> None:
        self.validated.append(result)
        if not result.get("ok"):
            raise ValidationFailed(
                [{"path": "result.ok", "message": "must be true", "validator": "custom"}]
            )

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


class Empty(OrderType):
    """``plan`` returns no items when the payload says so."""

    type = "test.empty"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        return [] if order.payload.get("nothing") else super().plan(order)

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


class Broken(OrderType):
    """Auto-approves, but its ``can_approve`` raises (a bug in the deployment's code)."""

    type = "test.broken"
    auto_approve = True

    def can_approve(self, order: OrderView) -> bool:
        raise KeyError("reviewer")

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


class WorkerDied(BaseException):
    """Raised from inside an apply body to stand for its worker dying there: not an
    ``Exception``, so nothing records it, and the apply claim is left behind."""


class Gated(OrderType):
    """Apply is driven by the test, one step per call, from ``script``: ``"wait"`` blocks
    until ``release`` is set, then succeeds (``"wait-fail"``: then raises); ``"fail"``
    raises at once; ``"die"`` raises :class:`WorkerDied`; ``"ok"`` (and any call past the
    script) succeeds. Counts calls and the bodies running at once."""

    type = "test.gated"

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.calls = self.running = self.most_at_once = 0

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        with self.lock:
            step = self.script[self.calls] if self.calls < len(self.script) else "ok"
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            if step.startswith("wait"):
                self.entered.set()
                if not self.release.wait(30):
                    raise TimeoutError("the test never released the apply")
            if step.endswith("fail"):
                raise RuntimeError("downstream refused the call")
            elif step == "die":
                raise WorkerDied()
            return Diff({"done": False}, {"done": True}, f"gated call {self.calls}")
        finally:
            with self.lock:
                self.running -= 1
