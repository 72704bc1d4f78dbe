"""Loaded by the API server under test (WORK_MANAGER_ORDER_TYPES=tests.api.server_types).

Registers the test order types, and a dispatcher factory that stands in for the Celery
worker (``--dispatcher tests.api.server_types:worker_threads``): approvals are applied
and submitted orders checked for auto-approval on background threads of the server.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence

from tests.support.types import Multi, Parts, Picky, Simple
from workmanager import Registry, WorkManager

log = logging.getLogger("tests.api")


def register(registry: Registry) -> None:
    for order_type in (Simple(), Multi(), Parts(), Picky()):
        registry.register(order_type)


class WorkerThreads:
    """A dispatcher doing what the control-plane worker would, in threads."""

    def __init__(self, wm: WorkManager) -> None:
        self.wm = wm

    def _spawn(self, fn: object, *args: object) -> None:
        def run() -> None:
            try:
                fn(*args)  # type: ignore[operator]
            except Exception:
                log.exception("background task failed")

        threading.Thread(target=run, daemon=True).start()

    def order_submitted(self, order_id: uuid.UUID) -> None:
        self._spawn(self.wm.orders.check_auto_approval, order_id)

    def order_approved(self, order_id: uuid.UUID) -> None:
        self._spawn(self.wm.executor.apply, order_id)

    def items_available(self, order_type: str, item_ids: Sequence[uuid.UUID]) -> None:
        pass

    def waiting(self, order_type: str) -> int | None:
        return None


def worker_threads(wm: WorkManager) -> WorkerThreads:
    return WorkerThreads(wm)
