"""Allocator strategies: code that discovers work and proposes orders on a schedule.

``workmanager.orders.generate`` (beat, every 15 minutes) and ``workmanager generate`` ask
every registered strategy for order requests and propose each one. Give requests a
``dedupe_key`` so that discovering the same work twice creates one order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class OrderRequest:
    """One order a strategy wants proposed."""

    type: str
    payload: dict[str, Any]
    priority: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    dedupe_key: str | None = None


class AllocatorStrategy:
    """Subclass, set ``name`` and implement :meth:`discover`; register with
    ``registry.register_allocator(MyStrategy())``."""

    name: ClassVar[str] = ""

    def discover(self) -> list[OrderRequest]:
        raise NotImplementedError
