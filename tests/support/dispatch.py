"""A dispatcher that remembers every announcement, for tests of the services."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from workmanager.dispatch import NullDispatcher


class RecordingDispatcher(NullDispatcher):
    """Remembers every announcement; for tests of the services."""

    def __init__(self) -> None:
        self.submitted: list[uuid.UUID] = []
        self.approved: list[uuid.UUID] = []
        self.available: list[tuple[str, list[uuid.UUID]]] = []

    def order_submitted(self, order_id: uuid.UUID) -> None:
        self.submitted.append(order_id)

    def order_approved(self, order_id: uuid.UUID) -> None:
        self.approved.append(order_id)

    def items_available(self, order_type: str, item_ids: Sequence[uuid.UUID]) -> None:
        self.available.append((order_type, list(item_ids)))
