"""The port through which services announce work to the task queue (Celery lives in tasks/).

Services call these hooks after their transaction commits. The default does nothing, so the
library and its tests run with no broker; ``tasks`` installs a Celery-backed dispatcher.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol


class Dispatcher(Protocol):
    """Hooks called after commit. Implementations must not raise for a broker hiccup."""

    def order_submitted(self, order_id: uuid.UUID) -> bool | None:
        """Every item of the order is submitted: check auto-approval. ``False``: the
        broker did not take the message (maintenance reports it not sent)."""

    def order_approved(self, order_id: uuid.UUID) -> bool | None:
        """The order was approved: apply it (``False`` as :meth:`order_submitted`)."""

    def items_available(self, order_type: str, item_ids: Sequence[uuid.UUID]) -> None:
        """Items were planned or requeued and can be leased."""

    def waiting(self, order_type: str) -> int | None:
        """How many announcements wait unread on the type's agent queue (``None``: not
        known): maintenance re-announces no item while as many wait."""


class NullDispatcher:
    """Announces nothing; used when no task queue is wired in."""

    def order_submitted(self, order_id: uuid.UUID) -> bool | None:
        return None

    def order_approved(self, order_id: uuid.UUID) -> bool | None:
        return None

    def items_available(self, order_type: str, item_ids: Sequence[uuid.UUID]) -> None:
        pass

    def waiting(self, order_type: str) -> int | None:
        return None
