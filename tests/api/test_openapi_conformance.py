"""``/openapi.json`` describes what the server does (issue 14): the bearer scheme, the
error envelope, the headers and query parameters; and a bounded schemathesis run with
response conformance checks on (status codes, content types, bodies and headers against
the schema) finds nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import Server, propose

CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 6


def test_the_document_declares_auth_errors_headers_and_queries(db_server: Server) -> None:
    doc = httpx.get(db_server.url + "/openapi.json").json()
    text = json.dumps(doc)
    assert "SPEC §" not in text and "HTTPValidationError" not in text
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    paths = doc["paths"]
    prefix = "/agent/work"
    submit = paths[f"{prefix}/items/{{item_id}}/submit"]["post"]
    headers = {p["name"]: p for p in submit["parameters"] if p["in"] == "header"}
    assert headers["X-Lease-Token"]["required"] is True
    assert headers["X-Idempotency-Key"]["required"] is True
    assert {"X-Agent-ID", "X-Request-ID", "X-Model-Name"} <= set(headers)
    assert submit["security"] == [{"bearer": []}]
    for status in ("401", "403", "404", "409", "422"):
        schema = submit["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}
    listing = {p["name"] for p in paths[f"{prefix}/orders"]["get"]["parameters"]}
    assert {"filter", "sort", "page[size]", "page[number]"} <= listing
    assert paths[f"{prefix}/orders"]["get"]["summary"] == "List orders (filters, sorts, pages)"


def test_responses_conform_to_the_document(db_server: Server) -> None:
    admin = db_server.client()
    for _ in range(2):
        propose(admin)
    schema = schemathesis.openapi.from_url(db_server.url + "/openapi.json")
    failures: list[str] = []
    for operation in [result.ok() for result in schema.get_all_operations()]:

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
                "Authorization": f"Bearer {db_server.tokens['admin']}",
                "X-Agent-ID": "fuzz-agent-1",
                "X-Idempotency-Key": uuid.uuid4().hex,
            }
            response = case.call(base_url=db_server.url, headers=headers, timeout=30)
            try:
                case.validate_response(response, checks=CHECKS)
            except (Exception, BaseExceptionGroup) as exc:  # keep its text, go on
                failures.append(f"{case.method} {case.formatted_path}: {exc}"[:600])

        run()
    assert failures == [], "\n\n".join(failures[:10])
