"""A types module that replaces ``test.simple`` with a subclass of its own (SPEC §4:
re-registering a name replaces it)."""

from __future__ import annotations

from typing import Any

from tests.support.types import Simple


class Replaced(Simple):
    pass


def register(registry: Any) -> None:
    registry.register(Replaced())
