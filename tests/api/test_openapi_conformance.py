"""``/openapi.json`` describes what the server does (issue 14): the bearer scheme, the error
envelope with the codes each route can answer, the success bodies, the headers and query
parameters. A hand-driven run through every route's success answers validates each body
against the document with ``jsonschema``; and a bounded schemathesis run with response
conformance checks on (status codes, content types, bodies and headers against the
schema), partly on real ids and lease tokens so that successes are checked too, finds
nothing."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.api.conftest import PREFIX, Server, checkout, idem, lease_headers, propose

CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 10


class Document:
    """The served document, and a check of one response against it."""

    def __init__(self, server: Server) -> None:
        self.doc: dict[str, Any] = httpx.get(server.url + "/openapi.json").json()
        self.seen: Counter[str] = Counter()

    def schema(self, method: str, path: str, status: int, media: str) -> dict[str, Any]:
        responses = self.doc["paths"][path][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {path}: {status} is not declared"
        content = responses[str(status)]["content"]
        assert media in content, f"{method} {path} {status}: {media} is not declared"
        return {**content[media]["schema"], "components": self.doc["components"]}

    def check(self, r: httpx.Response, path: str, status: int) -> dict[str, Any]:
        """``r`` has ``status`` and a body the document declares for it."""
        assert r.status_code == status, r.text
        schema = self.schema(r.request.method, path, status, "application/json")
        body: dict[str, Any] = r.json()
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        errors = [f"{e.json_path}: {e.message}"[:300] for e in validator.iter_errors(body)]
        assert errors == [], f"{r.request.method} {path} {status}: {errors}"
        self.seen[f"{r.request.method} {path} {status}"] += 1
        return body


def test_the_document_declares_auth_errors_headers_and_queries(db_server: Server) -> None:
    doc = httpx.get(db_server.url + "/openapi.json").json()
    text = json.dumps(doc, ensure_ascii=False)  # "§", not "\\u00a7"
    assert "SPEC" not in text and "§" not in text and "HTTPValidationError" not in text
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    paths = doc["paths"]
    submit = paths[f"{PREFIX}/items/{{item_id}}/submit"]["post"]
    headers = {p["name"]: p for p in submit["parameters"] if p["in"] == "header"}
    assert headers["X-Lease-Token"]["required"] is True
    assert headers["X-Idempotency-Key"]["required"] is True
    assert {"X-Agent-ID", "X-Request-ID", "X-Model-Name"} <= set(headers)
    assert submit["security"] == [{"bearer": []}]
    for status in ("401", "403", "404", "408", "409", "422"):  # 408: a body too slow
        schema = submit["responses"][status]["content"]["application/json"]["schema"]
        assert schema["allOf"][0] == {"$ref": "#/components/schemas/ErrorEnvelope"}
    codes = submit["responses"]["409"]["content"]["application/json"]["schema"]["allOf"][1]
    assert codes["properties"]["error"]["properties"]["code"]["enum"] == [
        "idempotency_in_flight",
        "illegal_state_transition",
        "lease_conflict",
        "lease_expired",
    ]
    # each route its own statuses: no 409/422 where nothing can conflict or be refused
    listing = paths[f"{PREFIX}/orders"]["get"]
    assert set(listing["responses"]) == {"200", "400", "401", "403", "503"}
    assert set(paths["/healthz"]["get"]["responses"]) == {"200"}
    assert "428" not in paths[f"{PREFIX}/checkout"]["post"]["responses"]  # not enforced there
    assert {p["name"] for p in listing["parameters"]} >= {"filter", "sort", "page[size]"}
    assert listing["summary"] == "List orders (filters, sorts, pages)"
    # every success declares its real body, not "a JSON object"
    for path, operations in paths.items():
        for method, op in operations.items():
            for status, response in op["responses"].items():
                for media in response["content"].values():
                    assert media["schema"] not in ({}, {"type": "object"}), (path, method, status)


def test_every_success_body_matches_the_document(db_server: Server) -> None:
    """Each route's success answers, as an agent and a reviewer meet them, validated
    against the schema the document declares for their status."""
    doc = Document(db_server)
    admin, agent = db_server.client(), db_server.client("agent-a", "conform-agent")
    P = PREFIX
    doc.check(httpx.get(db_server.url + "/healthz"), "/healthz", 200)
    doc.check(admin.get("/readyz"), "/readyz", 200)
    doc.check(admin.get("/metrics"), "/metrics", 404)  # the null metrics driver

    # propose: created, found again by its dedupe key, and found by a caller without view
    key = {"type": "test.simple", "payload": {"n": 1}, "dedupe_key": uuid.uuid4().hex}
    made = doc.check(admin.post(f"{P}/propose", json=key, headers=idem()), f"{P}/propose", 201)
    again = doc.check(admin.post(f"{P}/propose", json=key, headers=idem()), f"{P}/propose", 200)
    assert again["order"] == made["order"]
    blind = db_server.client("proposer", "conform-proposer")
    ref = doc.check(blind.post(f"{P}/propose", json=key, headers=idem()), f"{P}/propose", 200)
    assert set(ref["order"]) == {"id", "state"}
    oid = made["order"]["id"]

    # lease, beat, look, submit; the same submit retried is the stored answer
    item = doc.check(
        agent.post(f"{P}/orders/{oid}/checkout"), f"{P}/orders/{{order_id}}/checkout", 200
    )["item"]
    assert isinstance(item["lease_token"], str)
    base, ipath = f"{P}/items/{item['id']}", f"{P}/items/{{item_id}}"
    beat = agent.post(f"{base}/heartbeat", json={"progress": 0.5}, headers=lease_headers(item))
    doc.check(beat, f"{ipath}/heartbeat", 200)
    doc.check(agent.get(f"{base}/logs"), f"{ipath}/logs", 200)
    doc.check(agent.get(f"{base}/parts"), f"{ipath}/parts", 200)
    headers = lease_headers(item)
    for _ in range(2):
        r = agent.post(f"{base}/submit", json={"result": {"answer": 42}}, headers=headers)
        doc.check(r, f"{ipath}/submit", 202)
    assert r.headers.get("Idempotent-Replayed") == "true"
    doc.check(admin.get(f"{P}/orders/{oid}"), f"{P}/orders/{{order_id}}", 200)

    # the list, plain and with every include and sparse fieldsets
    doc.check(admin.get(f"{P}/orders"), f"{P}/orders", 200)
    params = {"include": "items,events,eventsCount", "fields[work_orders]": "id,state"}
    page = doc.check(
        admin.get(f"{P}/orders", params={**params, "fields[items]": "id"}), f"{P}/orders", 200
    )
    assert page["data"] and set(page["data"][0]["items"][0]) == {"id"}

    # approve and wait for apply: the settled order and its diff
    waited = admin.post(f"{P}/orders/{oid}/approve", params={"wait": 20}, headers=idem())
    settled = doc.check(waited, f"{P}/orders/{{order_id}}/approve", 200)
    assert settled["order"]["state"] in ("applied", "completed")

    # approve without waiting; reject
    for action, status in (("approve", 202), ("reject", 200)):
        order = propose(admin)
        leased = checkout(agent, order["id"])
        done = agent.post(
            f"{P}/items/{leased['id']}/submit",
            json={"result": {"answer": 1}},
            headers=lease_headers(leased),
        )
        assert done.status_code == 202, done.text
        body = {"errors": [{"code": "no", "message": "redo", "field": "answer"}]}
        r = admin.post(f"{P}/orders/{order['id']}/{action}", json=body, headers=idem())
        doc.check(r, f"{P}/orders/{{order_id}}/{action}", status)

    # release; fail for good, then retry the failed order
    order = propose(admin)
    r = agent.post(f"{P}/checkout", json={"type": "test.simple"}, params={"min_priority": 0})
    leased = doc.check(r, f"{P}/checkout", 200)["item"]
    assert leased["order_id"] == order["id"]
    r = agent.post(f"{P}/items/{leased['id']}/release", headers=lease_headers(leased))
    doc.check(r, f"{ipath}/release", 200)
    leased = checkout(agent, order["id"])
    failure = {"error": {"code": "boom", "message": "no"}, "retryable": False}
    r = agent.post(f"{P}/items/{leased['id']}/fail", json=failure, headers=lease_headers(leased))
    assert doc.check(r, f"{ipath}/fail", 200)["item"]["state"] == "failed"
    r = admin.post(f"{P}/orders/{order['id']}/retry", headers=idem())
    doc.check(r, f"{P}/orders/{{order_id}}/retry", 200)

    # parts, the list of parts, finalize
    order = propose(admin, "test.parts")
    leased = checkout(agent, order["id"])
    base = f"{P}/items/{leased['id']}"
    for key_, payload in (("a", {"v": 1}), ("b", {"w": 2})):
        part = {"part_key": key_, "payload": payload, "evidence": {"e": 1}, "notes": "n"}
        r = agent.post(f"{base}/parts", json=part, headers=lease_headers(leased))
        stored = doc.check(r, f"{ipath}/parts", 202)
    assert stored["item_parts_state"]["b"]["status"] == "validated"
    listed = doc.check(agent.get(f"{base}/parts"), f"{ipath}/parts", 200)
    assert len(listed["parts"]) == 2
    r = agent.post(f"{base}/finalize", json={"mode": "strict"}, headers=lease_headers(leased))
    doc.check(r, f"{ipath}/finalize", 202)
    doc.check(agent.get(f"{P}/orders/{order['id']}"), f"{P}/orders/{{order_id}}", 200)

    # the right to be forgotten, as a dry run (admin)
    body = {"agent_id": "conform-nobody", "dry_run": True}
    doc.check(admin.post(f"{P}/provenance/forget", json=body), f"{P}/provenance/forget", 200)

    # every success status the document declares was met (a recovered replay aside: it
    # needs a process killed between commit and answer)
    recovered = {"$ref": "#/components/schemas/Recovered"}
    declared = {
        f"{m.upper()} {p} {s}"
        for p, ops in doc.doc["paths"].items()
        for m, op in ops.items()
        for s, response in op["responses"].items()
        if s.startswith("2")
        and response["content"].get("application/json", {}).get("schema") != recovered
    }
    missing = declared - set(doc.seen) - {"GET /metrics 200"}  # a null metrics driver here
    assert missing == set()


def test_a_wrong_body_fails_the_declared_schema(db_server: Server) -> None:
    """The schemas check something: a body missing a key, or carrying one the server never
    sends, is refused (with ``{"type": "object"}`` both passed)."""
    doc = Document(db_server)
    admin = db_server.client()
    r = admin.post(f"{PREFIX}/propose", json={"type": "test.simple", "payload": {}}, headers=idem())
    schema = doc.schema("POST", f"{PREFIX}/propose", 201, "application/json")
    order, count = r.json()["order"], r.json()["items_count"]
    jsonschema.validate({"order": order, "items_count": count}, schema)
    for wrong in (
        {k: v for k, v in order.items() if k != "state"},
        {**order, "surprise": 1},
        {**order, "state": "lost"},
        {**order, "id": 7},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"order": wrong, "items_count": count}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"order": order}, schema)


def test_two_different_keys_are_a_refusal_the_document_declares(db_server: Server) -> None:
    """Both key headers naming different keys is 422 ``validation_failed`` on every POST
    that reads a key; the document declared only ``idempotency_key_reused`` under 422 for
    retry, approve and checkout (found by an adversarial pass)."""
    doc = Document(db_server)
    admin = db_server.client()
    order = propose(admin)["id"]
    two = {"X-Idempotency-Key": "k1", "Idempotency-Key": "k2"}
    for path in ("/orders/{order_id}/retry", "/orders/{order_id}/approve", "/checkout"):
        r = admin.post(PREFIX + path.format(order_id=order), headers=two)
        body = doc.check(r, PREFIX + path, 422)
        assert body["error"]["code"] == "validation_failed", body


def test_responses_conform_to_the_document(db_server: Server) -> None:
    """Schemathesis, every operation: half the cases on a real order, item and lease, so
    successes are generated and their bodies checked too."""
    admin = db_server.client()
    agent = db_server.client("admin", AGENT_ID)
    for _ in range(2):
        propose(admin)
    schema = schemathesis.openapi.from_url(db_server.url + "/openapi.json")
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    results = list(schema.get_all_operations())
    assert all(isinstance(r, Ok) for r in results), results  # the document loads whole
    for operation in [r.ok() for r in results if isinstance(r, Ok)]:
        order = propose(admin)
        item = checkout(agent, order["id"])
        real = {"order_id": order["id"], "item_id": item["id"]}
        fuzz(db_server, operation, real, str(item["lease_token"]), failures, statuses)
    assert failures == [], "\n\n".join(failures[:10])
    assert sum(n for s, n in statuses.items() if 200 <= s < 300) >= 15, statuses


AGENT_ID = "fuzz-agent-1"


def fuzz(
    server: Server,
    operation: Any,
    real: dict[str, str],
    lease_token: str,
    failures: list[str],
    statuses: Counter[int],
) -> None:
    """Run ``operation``'s generated cases, every other one on the real ids and lease."""
    calls = iter(range(10**6))

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
        database=None,
    )
    def run(case: Any) -> None:
        headers = {
            "Authorization": f"Bearer {server.tokens['admin']}",
            "X-Agent-ID": AGENT_ID,
            "X-Idempotency-Key": uuid.uuid4().hex,
        }
        if next(calls) % 2 == 0:
            for name in case.path_parameters or {}:
                case.path_parameters[name] = real.get(name, case.path_parameters[name])
            headers["X-Lease-Token"] = lease_token
            mine = ("x-agent-id", "x-lease-token")
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in mine}
        response = case.call(base_url=server.url, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # keep its text, go on
            failures.append(f"{case.method} {case.formatted_path}: {exc}"[:600])

    run()
