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


class Unsayable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words")


class ThreeHooks:
    """What the docs ask of a dispatcher: no ``waiting``."""

    def order_submitted(self, order_id: uuid.UUID) -> bool | None:
        raise Unsayable()

    def order_approved(self, order_id: uuid.UUID) -> bool | None:
        return True

    def items_available(self, order_type: str, item_ids: Sequence[uuid.UUID]) -> None:
        return None


def test_an_unsayable_raise_and_a_missing_optional_hook(caplog: pytest.LogCaptureFixture) -> None:
    """Logging ``str(exc)`` raised again (a 500 after the commit after all); a dispatcher
    with the three documented hooks logged a false error at every maintenance run."""
    dispatcher = Forgiving(ThreeHooks())  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="workmanager.dispatch"):
        assert dispatcher.order_submitted(uuid.uuid4()) is False
        assert dispatcher.waiting("t") is None
    assert [r.getMessage() for r in caplog.records] == [
        "dispatcher ThreeHooks.order_submitted raised Unsayable: Unsayable (its message could"
        " not be read) (the operation itself committed)"
    ]
