"""What the agent API returns: the item after a call, and a stored part."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ValidationFailed


@dataclass(frozen=True)
class ItemOutcome:
    """The item after an agent call, and its order's state."""

    item: dict[str, Any]
    order_state: str
    order_submitted: bool = False


@dataclass(frozen=True)
class PartOutcome:
    """A stored part and the item's parts state. ``rejected``: the part failed validation
    and was stored ``rejected``; the agent API raises it once that is committed."""

    part: dict[str, Any]
    parts_state: dict[str, Any]
    required: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    rejected: ValidationFailed | None = None
