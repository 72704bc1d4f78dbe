"""``/openapi.json`` as the server behaves: the bearer scheme, the error envelope for every
error status, the headers and query parameters the routes read. The routes declare their
bodies; what they read by hand (headers, ``filter[...]``) and what the error handlers send
is described here, in one place, from the same settings the server runs with."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..settings import Settings

ERROR_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}
ERROR_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "description": "Every error: a code, a message a person can read, details when known.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "examples": ["validation_failed"]},
                "message": {"type": "string"},
                "details": {"description": "e.g. [{path, message, validator}]"},
            },
        }
    },
}
#: What each error status means on this API (every status the exception tree maps to).
ERROR_STATUSES = {
    "400": "malformed JSON or a header of the wrong form",
    "401": "no valid bearer token",
    "403": "the token lacks the scope, or the lease is another agent's",
    "404": "no such order or item",
    "409": "a conflict: the lease, the state, an idempotency key in flight",
    "413": "the body is larger than WORK_MANAGER_MAX_BODY_BYTES",
    "422": "the request failed validation",
    "428": "an idempotency key is required on this route",
    "500": "an unexpected server error",
    "503": "the database, broker or Redis is unavailable",
}
OUTSIDE_ERRORS = [(s, ERROR_STATUSES[s]) for s in ("404", "500", "503")]
AGENT_HEADERS = {
    "X-Agent-ID": "the calling agent's id (bound tokens: must match)",
    "X-Agent-Name": "the agent's name (provenance)",
    "X-Agent-Version": "the agent's version, semver (provenance)",
    "X-Model-Name": "the model behind the agent (provenance)",
    "X-Runtime": "the agent's runtime (provenance)",
}
ORDER_LIST_QUERY = (
    (
        "filter",
        "filters: filter[state]=queued,failed, filter[type]=…, filter[priority]=>=5,"
        " filter[items.state]=…",
        {"type": "object", "additionalProperties": {"type": "string"}},
    ),
    (
        "sort",
        "comma list of fields, '-' for descending, e.g. -priority,created_at",
        {"type": "string"},
    ),
    ("page[size]", "page size", {"type": "integer", "minimum": 1}),
    ("page[number]", "page number, from 1", {"type": "integer", "minimum": 1}),
    ("include", "related data to embed, e.g. items", {"type": "string"}),
    ("fields", "comma list of the fields to return", {"type": "string"}),
)
SPEC_MENTION = re.compile(r"\s*\(SPEC\s*§[\d.]+\)|\s*(?:of\s+)?SPEC\s*§[\d.]+")


def install(app: FastAPI, settings: Settings, auth_enabled: bool) -> None:
    """Serve the described document at ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = describe(doc, settings, auth_enabled)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe(doc: dict[str, Any], settings: Settings, auth_enabled: bool) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["ErrorEnvelope"] = ERROR_ENVELOPE
    if auth_enabled:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API token"}
        }
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            _operation(path, method, operation, settings, auth_enabled)
    return doc


def _operation(
    path: str, method: str, op: dict[str, Any], settings: Settings, auth_enabled: bool
) -> None:
    if "summary" in op:
        op["summary"] = SPEC_MENTION.sub("", op["summary"])
    responses = op.setdefault("responses", {})
    for status, response in responses.items():
        _request_id_header(response)
        if status.startswith("2"):
            _json_object(response)
    api = path.startswith(settings.api_prefix)
    # outside the API (health, metrics): no auth; 404 (/metrics without prometheus), 503
    for status, why in ERROR_STATUSES.items() if api else OUTSIDE_ERRORS:
        responses[status] = {
            "description": why,
            "content": {"application/json": {"schema": ERROR_REF}},
        }
        _request_id_header(responses[status])
    if not api:
        return
    if auth_enabled:
        op["security"] = [{"bearer": []}]
    params = op.setdefault("parameters", [])
    _lease_token(params, settings.lease_token_required)
    names = {(p["in"], p["name"].lower()) for p in params}
    params.extend(
        _header(name, why, required)
        for name, why, required in _headers(path, method, settings)
        if ("header", name.lower()) not in names
    )
    if method == "get" and path == f"{settings.api_prefix}/orders":
        params.extend(_order_list_query())


def _lease_token(params: list[dict[str, Any]], required: bool) -> None:
    for p in params:
        if p["in"] == "header" and p["name"].lower() == "x-lease-token":
            p["required"] = required
            p["description"] = "the lease token checkout returned (<fence>.<secret>)"
            p["schema"] = {"type": "string", "minLength": 1}


def _headers(path: str, method: str, settings: Settings) -> list[tuple[str, str, bool]]:
    """The headers every route reads, and the idempotency key on the mutating ones."""
    extra = [("X-Request-ID", "echoed on the response; generated when absent", False)]
    extra += [(name, why, False) for name, why in AGENT_HEADERS.items()]
    endpoint = _endpoint(path, method)
    if endpoint is not None:
        enforced = endpoint in settings.idempotency_enforce_on
        extra.append((settings.idempotency_header, "a retry with the same key acts once", enforced))
    return extra


def _order_list_query() -> list[dict[str, Any]]:
    params = []
    for name, why, schema in ORDER_LIST_QUERY:
        param: dict[str, Any] = {"name": name, "in": "query", "required": False}
        if name == "filter":
            param.update(style="deepObject", explode=True)
        params.append({**param, "description": why, "schema": schema})
    return params


def _endpoint(path: str, method: str) -> str | None:
    """The idempotency endpoint name of a mutating route (``settings.IDEMPOTENT_ENDPOINTS``)."""
    if method != "post":
        return None
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return "submit-part" if last == "parts" else last


def _header(name: str, why: str, required: bool) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": why,
        "schema": {"type": "string", "minLength": 1} if required else {"type": "string"},
    }


def _request_id_header(response: dict[str, Any]) -> None:
    response.setdefault("headers", {})["X-Request-ID"] = {
        "description": "the request's id (the caller's, or generated)",
        "schema": {"type": "string"},
    }


def _json_object(response: dict[str, Any]) -> None:
    content = response.setdefault("content", {"application/json": {}})
    media = content.get("application/json")
    if media is not None and not media.get("schema"):
        media["schema"] = {"type": "object"}
