"""A module named in ``WORK_MANAGER_ORDER_TYPES``: its ``register(registry)`` is called."""

from __future__ import annotations

from workmanager import ApplyContext, Diff, OrderType, OrderView, Registry

#: Every registry this module's ``register`` was called with (tests check it ran).
seen: list[Registry] = []


class Loaded(OrderType):
    """Registered through ``WORK_MANAGER_ORDER_TYPES``."""

    type = "test.loaded"

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


def register(registry: Registry) -> None:
    seen.append(registry)
    registry.register(Loaded())
