"""One trace from the proposal to the apply, across real processes (docs/operations.md#tracing).

Every process of the stack runs with ``WORK_MANAGER_TRACING=otlp`` and exports to a small
OTLP/HTTP collector in this test (protobuf ``ExportTraceServiceRequest`` on /v1/traces):
the producer (``workmanager orders create``), the control-plane worker, the agent consumer,
``workmanager serve``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ..api.conftest import free_port
from .conftest import ROOT

WORKMANAGER = str(Path(sys.executable).parent / "workmanager")

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]

ORDER, ITEM, TYPE, AGENT = (
    "workmanager.order.id",
    "workmanager.item.id",
    "workmanager.order.type",
    "workmanager.agent.id",
)


@dataclass(frozen=True)
class Span:
    name: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, str]


class Collector:
    """The spans the stack's processes exported, as they arrive."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            for resource_spans in request.resource_spans:
                service = _attributes(resource_spans.resource.attributes).get("service.name", "")
                for scope in resource_spans.scope_spans:
                    self.spans.extend(_span(s, service) for s in scope.spans)

    def named(self, name: str, trace_id: str | None = None) -> list[Span]:
        with self.lock:
            return [
                s
                for s in self.spans
                if s.name == name and (trace_id is None or s.trace_id == trace_id)
            ]


def _attributes(values: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in values}


def _span(span: Any, service: str) -> Span:
    return Span(
        span.name,
        service,
        span.trace_id.hex(),
        span.span_id.hex(),
        span.parent_span_id.hex(),
        _attributes(span.attributes),
    )


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    """The collector; a test names it before ``make_stack``, so it is set up first and shut
    down last: the stack's processes flush their last spans on SIGTERM, and to a closed
    port each exporter would retry with backoff for many seconds before exiting."""
    received = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                received.receive(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def traced_stack(make_stack: Any, endpoint: str, **settings: str) -> Any:
    stack = make_stack(tracing="otlp", **settings)
    stack.env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # export every 0.2 s, not every 5 s
        }
    )
    return stack


def test_one_trace_from_enqueue_to_apply(collector, make_stack) -> None:
    spans, endpoint = collector
    stack = traced_stack(make_stack, endpoint)
    stack.worker()
    stack.agent("e2e.echo", "tests.support.pipeline:gated_handler", concurrency=2)
    command = ["orders", "create", "--type", "e2e.echo", "--payload", '{"max": 30}', "--json"]
    created = subprocess.run(
        [WORKMANAGER, *command],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    order_id = str(uuid.UUID(json.loads(created.stdout)["id"]))
    [enqueue] = stack.wait_for(
        lambda: spans.named("workmanager.enqueue_order"), 30, "the producer's span"
    )
    trace = enqueue.trace_id
    assert enqueue.service == "workmanager-producer"
    assert enqueue.attributes[ORDER] == order_id
    assert enqueue.attributes[TYPE] == "e2e.echo"
    # the handler works until told: a heartbeat of its lease comes first, in the same trace
    [beat, *_] = stack.wait_for(
        lambda: spans.named("workmanager.heartbeat", trace), 30, "a heartbeat span"
    )
    (stack.tmp / "markers" / "go-all").touch()
    stack.wait_for(
        lambda: stack.wm.queries.order_state(uuid.UUID(order_id)) == "completed",
        30,
        "the order completed",
    )
    expected = [
        ("run/workmanager.orders.create", "workmanager-worker"),
        ("workmanager.propose", "workmanager-worker"),
        ("run/workmanager.agents.e2e.echo", "workmanager-agent"),
        ("workmanager.checkout", "workmanager-agent"),
        ("workmanager.submit", "workmanager-agent"),
        ("run/workmanager.orders.check_auto_approval", "workmanager-worker"),
        ("workmanager.check_auto_approval", "workmanager-worker"),
        ("run/workmanager.orders.apply", "workmanager-worker"),
        ("workmanager.apply", "workmanager-worker"),
    ]
    found = {
        name: stack.wait_for(lambda n=name: spans.named(n, trace), 20, f"span {name}")[0]
        for name, _ in expected
    }
    assert {name: found[name].service for name, _ in expected} == dict(expected)
    for name in ("workmanager.propose", "workmanager.check_auto_approval", "workmanager.apply"):
        assert found[name].attributes[ORDER] == order_id, name
    for name in ("workmanager.propose", "workmanager.apply"):
        assert found[name].attributes[TYPE] == "e2e.echo", name
    item_id = found["workmanager.checkout"].attributes[ITEM]
    for span in (found["workmanager.checkout"], beat, found["workmanager.submit"]):
        assert span.attributes[ORDER] == order_id, span.name
        assert span.attributes[ITEM] == item_id, span.name
        assert span.attributes[AGENT] == "agent-1", span.name
        assert span.attributes[TYPE] == "e2e.echo", span.name
    # parent links hold across the hops: a task's run continues the message that sent it.
    # A send span ends before its run starts but may be exported in a later batch: wait.
    run_create = found["run/workmanager.orders.create"]
    run_agent = found["run/workmanager.agents.e2e.echo"]
    for child in (run_create, run_agent):
        stack.wait_for(
            lambda c=child: c.parent_id in {s.span_id for s in spans.spans},
            20,
            f"the parent span of {child.name}",
        )
    by_id = {s.span_id: s for s in spans.spans if s.trace_id == trace}
    assert by_id[run_create.parent_id].name == "send workmanager.orders.create"
    assert by_id[by_id[run_create.parent_id].parent_id] == enqueue
    assert by_id[run_agent.parent_id].name == "send workmanager.agents.e2e.echo"
    assert found["workmanager.checkout"].parent_id == run_agent.span_id


def test_http_propose_continues_the_callers_traceparent(collector, make_stack) -> None:
    spans, endpoint = collector
    stack = traced_stack(make_stack, endpoint, auth="none")
    stack.worker()
    port = free_port()
    stack.start(
        "api",
        [WORKMANAGER, "serve", "--port", str(port)],
    )
    base = f"http://127.0.0.1:{port}"
    stack.wait_for(lambda: _answers(base), 30, "the API up")
    trace, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    response = httpx.post(
        f"{base}{stack.settings.api_prefix}/propose",
        json={"type": "e2e.echo", "payload": {"n": 1}},
        headers={"traceparent": f"00-{trace}-{parent}-01", "X-Idempotency-Key": "t-1"},
        timeout=30,
    )
    assert response.status_code in (200, 201), response.text
    order_id = response.json()["order"]["id"]
    [propose] = stack.wait_for(
        lambda: spans.named("workmanager.propose", trace), 30, "the propose span"
    )
    assert propose.service == "workmanager-api"
    assert propose.attributes[ORDER] == order_id
    # The server span ends after the response is sent: it may come in a later export.
    server = stack.wait_for(
        lambda: [s for s in spans.spans if s.trace_id == trace and s.parent_id == parent],
        30,
        "the HTTP server span",
    )
    assert server[0].service == "workmanager-api"
    # the items' messages carry the request's trace to the agents' queue
    stack.wait_for(
        lambda: spans.named("send workmanager.agents.e2e.echo", trace), 30, "the send span"
    )


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
