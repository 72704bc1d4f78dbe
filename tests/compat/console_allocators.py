"""Allocator strategies loaded by the ``workmanager generate`` subprocesses of
tests/compat/test_console.py (``WORK_MANAGER_ORDER_TYPES=tests.api.server_types,
tests.compat.console_allocators``), standing in for upstream's strategies tagged
``work-manager.strategies`` in GenerateCommandTest.

``WM_COMPAT_BROKEN_ALLOCATOR=1`` in the environment makes one strategy raise, as upstream's
"continues processing after one strategy fails"."""

from __future__ import annotations

import os

from tests.api.server_types import register as register_types
from workmanager import Registry
from workmanager.allocators import AllocatorStrategy, OrderRequest


class Discovering(AllocatorStrategy):
    """Two orders, one with a priority and one with meta (upstream's AllocatorStrategy case)."""

    name = "compat-discovering"

    def discover(self) -> list[OrderRequest]:
        return [
            OrderRequest("test.simple", {"name": "hello"}, priority=5),
            OrderRequest("test.simple", {"name": "world"}, meta={"source": "compat"}),
        ]


class Idle(AllocatorStrategy):
    """Discovers nothing (upstream's "no work discovered")."""

    name = "compat-idle"

    def discover(self) -> list[OrderRequest]:
        return []


class Broken(AllocatorStrategy):
    """Raises when asked to (upstream's "handles strategy errors gracefully")."""

    name = "compat-broken"

    def discover(self) -> list[OrderRequest]:
        if os.environ.get("WM_COMPAT_BROKEN_ALLOCATOR") == "1":
            raise RuntimeError("strategy failed to discover work")
        return []


def register(registry: Registry) -> None:
    register_types(registry)
    for strategy in (Broken(), Discovering(), Idle()):
        registry.register_allocator(strategy)
