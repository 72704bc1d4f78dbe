"""``/openapi.json`` as the server behaves: the bearer scheme, the error statuses and codes
each route can answer (:data:`ROUTE_ERRORS`, in the error envelope), the headers and query
parameters the routes read. The routes declare their success bodies (``api.responses``);
what they read by hand (headers, ``filter[...]``) and what the error handlers send is
described here, in one place, from the same settings the server runs with."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..ratelimit import rules
from ..settings import Settings

ERROR_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}
REPLAYED = "Idempotent-Replayed"
HTTP_VALIDATION_ERROR = "#/components/schemas/HTTPValidationError"
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
#: Every error code the API sends, its status and when (SPEC §6.1).
ERROR_CODES: dict[str, tuple[int, str]] = {
    "malformed_json": (400, "the body is not JSON, or is nested too deep"),
    "invalid_agent_metadata": (400, "an X-Agent-* header of the wrong form"),
    "invalid_query": (400, "an unknown or malformed query parameter"),
    "unauthenticated": (401, "no valid bearer token"),
    "forbidden": (403, "the token lacks the scope, or is bound to another agent"),
    "not_found": (404, "no such order or item (or the id is not a UUID)"),
    "lease_conflict": (409, "the lease is not the caller's, or the token is not the current one"),
    "lease_expired": (409, "the lease expired"),
    "no_items_available": (409, "no item can be leased now"),
    "illegal_state_transition": (409, "not allowed in the current state"),
    "not_ready_for_approval": (409, "the order cannot be approved yet"),
    "idempotency_in_flight": (409, "a request with this idempotency key is still running"),
    "request_timeout": (408, "the body did not arrive within API_BODY_TIMEOUT_SECONDS"),
    "payload_too_large": (413, "the body, a part or the parts count is over its limit"),
    "validation_failed": (422, "the request failed validation; details say where"),
    "unknown_order_type": (422, "no order type of that name is loaded"),
    "missing_parts": (422, "required parts have no validated part"),
    "idempotency_key_reused": (422, "the idempotency key was used with another request"),
    "dedupe_key_reused": (422, "the dedupe key belongs to another proposal"),
    "idempotency_key_required": (428, "this route requires the idempotency key header"),
    "rate_limited": (429, "a rate limit was reached; retry after Retry-After seconds"),
    "unavailable": (503, "the database, broker or Redis is unavailable; retry after a while"),
}
#: Every route under the API prefix: a caller's headers, token and scope; a backing service.
API_ERRORS = ("invalid_agent_metadata", "unauthenticated", "forbidden", "unavailable")
#: Every POST under the API prefix: the body, and the idempotency key (the 428 only where
#: the key is enforced, from the settings; 422 ``validation_failed`` when both key headers
#: name different keys).
POST_ERRORS = (
    "malformed_json",
    "request_timeout",
    "payload_too_large",
    "idempotency_in_flight",
    "idempotency_key_reused",
    "idempotency_key_required",
    "validation_failed",
)
LEASE_ERRORS = (
    "not_found",
    "lease_conflict",
    "lease_expired",
    "illegal_state_transition",
    "validation_failed",  # the lease token missing, or the body's shape
)
#: The routes that check out (the checkout rate limits apply to them).
CHECKOUT_ROUTES = ("POST /checkout", "POST /orders/{order_id}/checkout")
#: The errors each route can answer besides those above: the one table of them. Paths
#: under the API prefix are written without it. A route missing here is a test failure.
ROUTE_ERRORS: dict[str, tuple[str, ...]] = {
    "GET /healthz": (),
    "GET /readyz": (),  # its 503 is the readiness body, declared on the route
    "GET /metrics": ("not_found",),  # served only with the prometheus metrics driver
    "POST /propose": ("validation_failed", "unknown_order_type", "dedupe_key_reused"),
    "GET /orders": ("invalid_query",),
    "GET /orders/{order_id}": ("not_found",),
    "POST /checkout": ("invalid_query", "no_items_available", "validation_failed"),
    "POST /orders/{order_id}/checkout": ("not_found", "no_items_available"),
    "POST /orders/{order_id}/approve": (
        "invalid_query",
        "not_found",
        "illegal_state_transition",
        "not_ready_for_approval",
    ),
    "POST /orders/{order_id}/reject": (
        "not_found",
        "illegal_state_transition",
        "validation_failed",
    ),
    "POST /orders/{order_id}/retry": ("not_found", "illegal_state_transition"),
    "POST /items/{item_id}/heartbeat": LEASE_ERRORS,
    "POST /items/{item_id}/submit": LEASE_ERRORS,
    "POST /items/{item_id}/parts": LEASE_ERRORS,
    "GET /items/{item_id}/parts": ("invalid_query", "not_found"),
    "POST /items/{item_id}/finalize": (*LEASE_ERRORS, "missing_parts"),
    "POST /items/{item_id}/release": LEASE_ERRORS,
    "POST /items/{item_id}/fail": LEASE_ERRORS,
    "GET /items/{item_id}/logs": ("invalid_query", "not_found"),
    "POST /provenance/forget": ("validation_failed", "lease_conflict"),
}
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
    for schema in schemas.values():  # models' and enums' docstrings (the SPEC is not shipped)
        if isinstance(schema.get("description"), str):
            schema["description"] = SPEC_MENTION.sub("", schema["description"])
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
    for key in ("summary", "description"):
        if key in op:
            op[key] = SPEC_MENTION.sub("", op[key])
    _responses(path, method, op.setdefault("responses", {}), settings, auth_enabled)
    api = under_prefix(path, settings.api_prefix)
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


def _responses(
    path: str, method: str, responses: dict[str, Any], settings: Settings, auth_enabled: bool
) -> None:
    """The success bodies the route declared, and the errors of :data:`ROUTE_ERRORS`;
    the headers every response carries."""
    endpoint = _endpoint(path, method) if under_prefix(path, settings.api_prefix) else None
    for status, response in responses.items():
        _request_id_header(response)
        for media in response.get("content", {}).values():
            media.get("schema", {}).pop("title", None)  # "Response 200 Heartbeat Agent…"
        if endpoint is not None and status.startswith("2"):
            response["headers"][REPLAYED] = {
                "description": "true when this is the stored answer to a retried key",
                "schema": {"type": "string", "enum": ["true"]},
            }
    for status in [s for s, r in responses.items() if HTTP_VALIDATION_ERROR in str(r)]:
        del responses[status]  # FastAPI's own 422: this server answers its envelope instead
    for status, codes in _errors(path, method, settings, auth_enabled).items():
        responses[status] = {
            "description": "; ".join(f"`{c}`: {ERROR_CODES[c][1]}" for c in codes),
            "content": {"application/json": {"schema": _envelope(codes)}},
        }
        _request_id_header(responses[status])
    for status, response in responses.items():
        if status in ("429", "503"):
            response["headers"]["Retry-After"] = {
                "description": "seconds to wait before retrying",
                "required": True,
                "schema": {"type": "string"},
            }


def under_prefix(path: str, prefix: str) -> bool:
    """``path`` is one of the API's routes under ``prefix`` (``/h`` is no prefix of
    ``/healthz``: a plain string test took it for one, and the document was a 500)."""
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


def _errors(path: str, method: str, settings: Settings, auth_enabled: bool) -> dict[str, list[str]]:
    """The error codes a route can answer, by status (from :data:`ROUTE_ERRORS`)."""
    api = under_prefix(path, settings.api_prefix)
    route = f"{method.upper()} {path[len(settings.api_prefix) :] if api else path}"
    if route not in ROUTE_ERRORS:
        raise KeyError(f"{route}: add the errors it can answer to openapi.ROUTE_ERRORS")
    codes = list(ROUTE_ERRORS[route])
    if api:
        codes += API_ERRORS
        if not auth_enabled:
            codes = [c for c in codes if c not in ("unauthenticated", "forbidden")]
        codes += _rate_limited(route, settings)
    endpoint = _endpoint(path, method) if api else None
    if endpoint is not None:
        codes += POST_ERRORS
        if endpoint not in settings.idempotency_enforce_on:
            codes.remove("idempotency_key_required")
    by_status: dict[str, list[str]] = {}
    for code in sorted(set(codes), key=lambda c: (ERROR_CODES[c][0], c)):
        by_status.setdefault(str(ERROR_CODES[code][0]), []).append(code)
    return by_status


def _rate_limited(route: str, settings: Settings) -> tuple[str, ...]:
    """429 on every API route with a request rate limit set, on checkout with a checkout
    one (:mod:`workmanager.ratelimit.rules`)."""
    checkout = route in CHECKOUT_ROUTES and rules.limited(settings, rules.CHECKOUT)
    if checkout or rules.limited(settings, rules.REQUESTS):
        return ("rate_limited",)
    return ()


def _envelope(codes: list[str]) -> dict[str, Any]:
    """The error envelope, its ``code`` one of ``codes``."""
    return {
        "allOf": [
            ERROR_REF,
            {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
        ]
    }


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
