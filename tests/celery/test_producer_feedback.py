"""Producers get an answer (issue 14): a process that knows the order types is refused at
``enqueue_order``; otherwise the worker records the refused proposal under the returned id,
visible in ``orders show`` and ``GET /orders/{id}``, counted in ``orders_refused_total``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tasks.producer import enqueue_order
from workmanager.api.app import create_app
from workmanager.db.models import Order
from workmanager.errors import UnknownOrderType, ValidationFailed
from workmanager.services.tokens import TokenService

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

BIN = Path(sys.executable).parent


def order_state(stack, order_id: uuid.UUID) -> str | None:
    with stack.wm.db.transaction() as s:
        order = s.get(Order, order_id)
        return order.state if order else None


def test_a_producer_with_the_types_is_refused_before_sending(make_stack) -> None:
    stack = make_stack()
    registry = stack.wm.registry
    with pytest.raises(UnknownOrderType) as unknown:
        enqueue_order("e2e.nope", {}, app=stack.app, registry=registry)
    assert "e2e.echo" in unknown.value.message
    with pytest.raises(ValidationFailed) as invalid:
        enqueue_order("e2e.strict", {"n": "one"}, app=stack.app, registry=registry)
    assert invalid.value.details[0]["path"] == "payload.n"
    assert invalid.value.details[0]["validator"] == "type"
    stack.worker()
    good = enqueue_order("e2e.strict", {"n": 1}, app=stack.app, registry=registry)
    stack.wait_for(lambda: order_state(stack, good) == "queued", 30, "the valid order")
    with stack.wm.db.transaction() as s:  # the refused two were never sent
        assert s.scalar(select(func.count()).select_from(Order)) == 1


def test_the_worker_records_a_refused_proposal_under_the_returned_id(make_stack) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    stack = make_stack(metrics_driver="statsd", statsd_port=str(port), statsd_host="127.0.0.1")
    stack.worker()
    # this test process has no WORK_MANAGER_ORDER_TYPES: only the worker can tell
    unknown = enqueue_order("e2e.nope", {"a": 1}, app=stack.app)
    invalid = enqueue_order("e2e.strict", {"n": "one"}, app=stack.app)
    for order_id in (unknown, invalid):
        stack.wait_for(lambda i=order_id: order_state(stack, i) == "failed", 30, "refusal")

    token, _ = TokenService(stack.wm.ctx).create("viewer", ["view"])
    client = TestClient(create_app(stack.wm), raise_server_exceptions=False)
    body = client.get(
        f"{stack.settings.api_prefix}/orders/{invalid}",
        headers={"Authorization": f"Bearer {token}"},
    ).json()["order"]
    assert body["state"] == "failed", body
    assert body["last_error"]["code"] == "validation_failed"
    assert body["last_error"]["details"][0]["path"] == "payload.n"
    assert body["payload"] == {"n": "one"}

    shown = subprocess.run(
        [str(BIN / "workmanager"), "orders", "show", str(unknown), "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    order = json.loads(shown.stdout)
    assert order["type"] == "e2e.nope"
    assert order["last_error"]["code"] == "unknown_order_type"
    assert [e["event"] for e in order["events"]] == ["proposal_refused"]
    assert order["items"] == []
    # the worker's line names the order it recorded (an operator's "which order?")
    line = f"orders.create of 'e2e.nope' refused [unknown_order_type] (order {unknown},"
    assert line in stack.log("control"), stack.log("control")[-2000:]

    wanted = (
        "work_manager.orders_refused_total,type=other,reason=unknown_order_type:1|c",
        "work_manager.orders_refused_total,type=e2e.strict,reason=validation_failed:1|c",
    )
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(any(w in x for x in lines) for w in wanted):
        try:
            lines.extend(listener.recv(65535).decode().splitlines())
        except TimeoutError:
            continue
    listener.close()
    for w in wanted:
        assert any(w in line for line in lines), (w, lines)


def test_a_corrected_proposal_takes_the_refused_ones_dedupe_key(make_stack) -> None:
    stack = make_stack()
    stack.worker(concurrency=1)  # one message at a time, in the order sent
    refused = enqueue_order("e2e.strict", {"n": "x"}, dedupe_key="k-1", app=stack.app)
    stack.wait_for(lambda: order_state(stack, refused) == "failed", 30, "the refusal")
    refused_again = enqueue_order("e2e.strict", {"n": "x"}, dedupe_key="k-1", app=stack.app)
    corrected = enqueue_order("e2e.strict", {"n": 7}, dedupe_key="k-1", app=stack.app)
    assert refused == refused_again == corrected
    stack.wait_for(lambda: order_state(stack, corrected) == "queued", 30, "the corrected order")
    order = stack.wm.queries.order(corrected)
    assert (order["payload"], order["dedupe_key"], order["last_error"]) == ({"n": 7}, "k-1", None)
    assert len(order["items"]) == 1
    assert "proposal_refused" not in [e["event"] for e in order["events"]]
    # a bad proposal under a key that names a real order leaves that order alone
    enqueue_order("e2e.strict", {"n": "y"}, dedupe_key="k-1", app=stack.app)
    marker = enqueue_order("e2e.strict", {"n": 8}, app=stack.app)  # sent after it
    stack.wait_for(lambda: order_state(stack, marker) == "queued", 30, "the later order")
    order = stack.wm.queries.order(corrected)
    assert (order["state"], order["payload"]) == ("queued", {"n": 7})


def test_another_proposal_under_a_taken_key_is_written_into_that_orders_history(
    make_stack,
) -> None:
    """enqueue_order returns the key's id; a proposal the worker refused because the key
    names another proposal's order was only a log line, the producer's request lost
    without a trace where it looks. The order's history now says so."""
    import hashlib

    from workmanager.jsonvalues import canonical

    stack = make_stack()
    stack.worker(concurrency=1)
    first = enqueue_order("e2e.strict", {"n": 1}, dedupe_key="taken", app=stack.app)
    second = enqueue_order("e2e.strict", {"n": 2}, dedupe_key="taken", app=stack.app)
    assert first == second

    def refused() -> list[dict]:
        if order_state(stack, first) is None:  # not created yet
            return []
        events = stack.wm.queries.order(first)["events"]
        return [e for e in events if e["event"] == "proposal_refused"]

    stack.wait_for(refused, 30, "the refusal in the order's history")
    (event,) = refused()
    assert event["payload"]["code"] == "dedupe_key_reused"
    assert event["payload"]["payload_sha256"] == hashlib.sha256(canonical({"n": 2})).hexdigest()
    order = stack.wm.queries.order(first)
    assert (order["state"], order["payload"], order["last_error"]) == ("queued", {"n": 1}, None)
