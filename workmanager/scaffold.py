"""Skeletons for new code: ``workmanager make order-type NAME`` (SPEC §9)."""

from __future__ import annotations

import re

from .errors import ValidationFailed

_NAME = re.compile(r"^[a-z][a-z0-9_]*(?:[.-][a-z][a-z0-9_]*)*$")

_TEMPLATE = '''"""The ``{name}`` order type.

Register it in every process by naming this module in WORK_MANAGER_ORDER_TYPES
(``register(registry)`` below is called), or with ``registry.register({cls}())``.
"""

from __future__ import annotations

from workmanager import ApplyContext, Diff, ItemSpec, OrderType, OrderView, Registry
from workmanager.types import JSON, ItemView


class {cls}(OrderType):
    """TODO: say what one {name} order asks for and what applying it changes."""

    type = "{name}"
    auto_approve = False  # True: approve and apply as soon as every item is submitted

    def schema(self) -> JSON:
        """JSON Schema (draft 2020-12) of the order payload; failures are 422."""
        return {{
            "type": "object",
            "required": ["subject"],
            "properties": {{"subject": {{"type": "string", "minLength": 1}}}},
            "additionalProperties": False,
        }}

    def plan(self, order: OrderView) -> list[ItemSpec]:
        """Split the order into work items; one item per unit of agent work."""
        return [ItemSpec(input={{"subject": order.payload["subject"]}})]

    def result_schema(self, item: ItemView) -> JSON | None:
        """JSON Schema of an item's submitted result (None: no schema check)."""
        return {{"type": "object", "required": ["answer"]}}

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        """Make the change the order asked for. Must be idempotent: it may run again after a
        crash. Fence external writes with ``ctx.lease_tokens``."""
        after = {{i.input["subject"]: (i.result or {{}}).get("answer") for i in order.items}}
        return Diff(before={{}}, after=after, summary=f"{{len(after)}} answer(s) recorded")


def register(registry: Registry) -> None:
    registry.register({cls}())
'''


def class_name(name: str) -> str:
    """``customer.research`` → ``CustomerResearchOrder``."""
    words = re.split(r"[._-]+", name)
    return "".join(w[:1].upper() + w[1:] for w in words if w) + "Order"


def order_type_module(name: str) -> str:
    """The source of a module defining an OrderType subclass for ``name``, with ``schema``,
    ``plan``, ``result_schema`` and ``apply`` to fill in and a ``register`` function."""
    if not _NAME.match(name):
        raise ValidationFailed(
            [
                {
                    "path": "name",
                    "message": "an order type name is lowercase words joined by dots, "
                    "e.g. customer.research",
                    "validator": "pattern",
                }
            ],
            message=f"{name!r} is not an order type name like customer.research",
        )
    return _TEMPLATE.format(name=name, cls=class_name(name))
