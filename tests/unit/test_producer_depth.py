"""enqueue_order answers a payload it cannot encode (too deep, not JSON), before anything
is sent."""

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


def test_a_value_celerys_encoder_cannot_write_is_refused_before_sending() -> None:
    """Without the order types (``registry`` not given, none importable here), a payload
    holding a 5,000-digit integer raised a raw ValueError from Celery's encoder, and a
    datetime was sent as text; both are the project's ValidationFailed now, nothing sent."""
    from datetime import UTC, datetime

    from workmanager.errors import ValidationFailed

    app = Celery("producer-values", broker="memory://")
    sent: list[Any] = []
    app.send_task = lambda *a, **k: sent.append((a, k))  # type: ignore[method-assign]
    for payload in ({"n": 10**5000}, {"when": datetime.now(UTC)}, {1: "a"}):
        with pytest.raises(ValidationFailed) as caught:
            enqueue_order("t.x", payload, app=app)
        assert caught.value.details[0]["path"].startswith("payload")
    assert sent == []


def test_a_type_or_dedupe_key_no_database_stores_is_refused_before_sending() -> None:
    """Without the order types, a lone surrogate in the dedupe key raised
    UnicodeEncodeError out of the order id's uuid5, and one in the type was sent to a
    worker that could not record it."""
    from workmanager.errors import ValidationFailed

    app = Celery("producer-text", broker="memory://")
    sent: list[Any] = []
    app.send_task = lambda *a, **k: sent.append((a, k))  # type: ignore[method-assign]
    for field, kwargs in (
        ("type", {"type": "t.x\ud800"}),
        ("dedupe_key", {"type": "t.x", "dedupe_key": "k\ud800"}),
        ("dedupe_key", {"type": "t.x", "dedupe_key": "k\x00"}),
    ):
        with pytest.raises(ValidationFailed) as caught:
            enqueue_order(payload={}, app=app, **kwargs)
        assert caught.value.details[0]["path"] == field
    assert sent == []


def test_a_priority_or_tenant_no_order_can_hold_is_refused_before_sending() -> None:
    """A mutation pass: without the order types, a 5,000-digit priority raised a raw
    ValueError out of Celery's encoder and an object a kombu EncodeError; an empty tenant
    (an unset ``$TENANT``) must not be sent as "no tenant"."""
    from workmanager.errors import ValidationFailed

    app = Celery("producer-fields", broker="memory://")
    sent: list[Any] = []
    app.send_task = lambda *a, **k: sent.append((a, k))  # type: ignore[method-assign]
    for field, kwargs in (
        ("priority", {"priority": 10**5000}),
        ("priority", {"priority": object()}),
        ("priority", {"priority": True}),
        ("tenant_id", {"tenant_id": ""}),
        ("tenant_id", {"tenant_id": " acme"}),
    ):
        with pytest.raises(ValidationFailed) as caught:
            enqueue_order("t.x", {}, app=app, **kwargs)
        assert caught.value.details[0]["path"] == field, caught.value.details
    assert sent == []
