"""Example agent handlers (used by the demo, the Procfile and the docs)."""

from __future__ import annotations

from workmanager import Lease
from workmanager.demo import answer
from workmanager.types import JSON, ItemView


def research(item: ItemView, lease: Lease) -> JSON:
    """The demo's research agent: answers from the item's input."""
    return answer(item.input)
