"""A types module whose ``register`` returns its types instead of registering them (a
type author's mistake: nothing is registered)."""

from __future__ import annotations

from typing import Any

from tests.support.types import Simple


def register(registry: Any) -> list[Any]:
    return [Simple()]
