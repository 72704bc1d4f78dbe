"""enqueue_order answers a payload too deep to encode, before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from tasks.producer import enqueue_order
from workmanager.errors import MalformedJSON


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_a_payload_too_deep_is_refused_not_a_recursion_error() -> None:
    app = Celery("producer-depth", broker="memory://")
    sent: list[Any] = []
    app.send_task = lambda *a, **k: sent.append((a, k))  # type: ignore[method-assign]
    for field in ("payload", "meta"):
        args: dict[str, Any] = {"payload": {}, "meta": None, field: nested(5000)}
        with pytest.raises(MalformedJSON) as caught:
            enqueue_order("t.x", args["payload"], meta=args["meta"], app=app)
        assert field in caught.value.message
    assert sent == []
    enqueue_order("t.x", nested(10), app=app)
    assert len(sent) == 1
