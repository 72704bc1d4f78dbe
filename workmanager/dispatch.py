"""The port through which services announce work to the task queue (Celery lives in tasks/).

Services call these hooks after their transaction commits. The default does nothing, so the
library and its tests run with no broker; ``tasks`` installs a Celery-backed dispatcher.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from .jsonvalues import exception_text

log = logging.getLogger("workmanager.dispatch")


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


class Forgiving:
    """A dispatcher of the user's (``--dispatcher pkg.mod:factory``) whose hooks may
    raise: each is called after a commit, so a raise made the committed operation look
    failed (a 500, a proposal retried into three orders). Logged instead, and answered
    as not sent (``False``), so maintenance sends the approval check or apply again."""

    def __init__(self, inner: Dispatcher) -> None:
        self.inner = inner

    def _call(self, hook: str, *args: Any, failed: Any) -> Any:
        try:
            return getattr(self.inner, hook)(*args)
        except Exception as exc:
            said = exception_text(exc).splitlines()
            log.error(
                "dispatcher %s.%s raised %s: %s (the operation itself committed)",
                type(self.inner).__name__,
                hook,
                type(exc).__name__,
                said[0] if said else "",
            )
            return failed

    def order_submitted(self, order_id: uuid.UUID) -> bool | None:
        return self._call("order_submitted", order_id, failed=False)  # type: ignore[no-any-return]

    def order_approved(self, order_id: uuid.UUID) -> bool | None:
        return self._call("order_approved", order_id, failed=False)  # type: ignore[no-any-return]

    def items_available(self, order_type: str, item_ids: Sequence[uuid.UUID]) -> None:
        self._call("items_available", order_type, item_ids, failed=None)

    def waiting(self, order_type: str) -> int | None:
        if not callable(getattr(self.inner, "waiting", None)):  # optional: not known
            return None
        return self._call("waiting", order_type, failed=None)  # type: ignore[no-any-return]
