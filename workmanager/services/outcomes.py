"""What the agent API returns: the item after a call, and a stored part."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ItemOutcome:
    """The item after an agent call, and its order's state."""

    item: dict[str, Any]
    order_state: str
    order_submitted: bool = False


@dataclass(frozen=True)
class PartOutcome:
    part: dict[str, Any]
    parts_state: dict[str, Any]
