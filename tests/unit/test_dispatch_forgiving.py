"""A user's dispatcher (``--dispatcher pkg.mod:factory``) that raises: its hooks run after
a commit, so the raise made a committed operation answer 500 (and a host retrying a
proposal made three orders). The hooks are logged and answered as not sent."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import pytest

from workmanager.cli.serve import custom_dispatcher
from workmanager.dispatch import Forgiving


class Raising:
    def order_submitted(self, order_id: uuid.UUID) -> bool | None:
        raise RuntimeError("broker of my own is down")

    def order_approved(self, order_id: uuid.UUID) -> bool | None:
        raise RuntimeError("broker of my own is down")

    def items_available(self, order_type: str, item_ids: Sequence[uuid.UUID]) -> None:
        raise RuntimeError("broker of my own is down")

    def waiting(self, order_type: str) -> int | None:
        raise RuntimeError("broker of my own is down")


def raising(wm: object) -> Raising:
    return Raising()


def test_a_raising_dispatchers_hooks_are_logged_and_answered_not_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher = custom_dispatcher("tests.unit.test_dispatch_forgiving:raising", object())  # type: ignore[arg-type]
    assert isinstance(dispatcher, Forgiving)
    order_id = uuid.uuid4()
    with caplog.at_level(logging.ERROR, logger="workmanager.dispatch"):
        assert dispatcher.order_submitted(order_id) is False
        assert dispatcher.order_approved(order_id) is False
        assert dispatcher.items_available("t", [order_id]) is None
        assert dispatcher.waiting("t") is None
    assert len(caplog.records) == 4
    assert "Raising.order_submitted raised RuntimeError: broker of my own is down" in caplog.text
