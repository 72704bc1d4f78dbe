"""MCP tool arguments as clients send them, adapted to the operations: upstream's camelCase
names beside snake_case (an unknown or doubled argument is ``validation_failed``, never
dropped), pydantic's refusals in the project's envelope, ``work.list``'s arguments as the
orders list's query parameters, and upstream's answer shapes (``orders``/``count``,
``recent_events``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from ..errors import ValidationFailed, problem
from ..surface.absent import empty, null_is_default
from ..surface.callers import AgentMetadata
from ..surface.operations import Answer

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake(name: str) -> str:
    """``itemId`` → ``item_id``, ``allowRework`` → ``allow_rework`` (upstream's names)."""
    return _CAMEL.sub(r"_\1", name).lower()


def normalise_arguments(arguments: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The arguments under the tool's own (snake_case) names: a camelCase alias is renamed;
    an argument the tool does not take, or one given under both names, is
    ``validation_failed`` naming it (never silently dropped); ``null`` for one with a
    default is that default (:mod:`..surface.absent`)."""
    properties = schema.get("properties", {})
    known = set(properties)
    out: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for name, value in (arguments or {}).items():
        canonical = name if name in known else snake(name)
        if canonical not in known:
            why = "unknown argument; this tool takes " + ", ".join(sorted(known))
            errors.append(problem(name, why, "additionalProperties"))
        elif canonical in out:
            errors.append(problem(name, f"given twice (as {canonical!r} too)", "duplicate"))
        else:
            out[canonical] = value
            refused = _scalar_refused(schema["properties"][canonical], value)
            if refused is not None:
                errors.append(problem(name, refused, "type"))
    if errors:
        raise ValidationFailed(errors, "the tool arguments failed validation")
    defaulted = [n for n, p in properties.items() if p.get("default") is not None]
    return null_is_default(out, defaulted)


def _types(prop: dict[str, Any]) -> set[str]:
    """The JSON types an argument's schema allows (its ``type`` and its ``anyOf``'s)."""
    found = {prop["type"]} if isinstance(prop.get("type"), str) else set()
    for option in prop.get("anyOf", ()):
        found |= _types(option)
    return found


def _scalar_refused(prop: dict[str, Any], value: Any) -> str | None:
    """Why a boolean, integer or number argument is refused: strictly its JSON type, as the
    HTTP API's bodies are (the SDK's lax validation took ``"no"`` for ``false`` and
    ``true`` for ``1``); ``None`` when it is accepted here."""
    allowed = _types(prop) - {"null"}
    if value is None or not allowed or not allowed <= {"boolean", "integer", "number"}:
        return None
    if "boolean" in allowed and isinstance(value, bool):
        return None
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if "number" in allowed and numeric:
        return None
    if "integer" in allowed and numeric and isinstance(value, int):
        return None
    return "must be " + " or ".join(_NAMES[t] for t in sorted(allowed))


_NAMES = {"boolean": "true or false", "integer": "an integer", "number": "a number"}


def argument_errors(error: ValidationError) -> ValidationFailed:
    """Pydantic's refusal of tool arguments as ``validation_failed`` (the values the caller
    sent are not echoed, only where and why)."""
    details = [
        problem(".".join(str(p) for p in e["loc"]), e["msg"], e["type"]) for e in error.errors()
    ]
    return ValidationFailed(details, "the tool arguments failed validation")


def list_params(
    query: dict[str, str] | None,
    state: str | None,
    type: str | None,
    priority: str | None,
    filter: dict[str, Any] | None,
    sort: str | None,
    include: str | None,
    fields: dict[str, str] | None,
    page: dict[str, int] | None,
    tenant_id: str | None = None,
) -> list[tuple[str, str]]:
    """Upstream's ``work.list`` arguments as the orders list's query parameters: a list is
    a comma list (any of), ``filter.meta`` an object (each key and value, all of them) or
    ``key:value``."""
    params = list((query or {}).items())
    filters = {k: v for k, v in (filter or {}).items() if not empty(v)}  # surface/absent.py
    for name, value in (("state", state), ("type", type), ("priority", priority)):
        if value is not None:
            filters[name] = value
    meta = filters.pop("meta", None)
    if isinstance(meta, dict):  # upstream's JSON contains: each key's value, not a list
        for k, v in meta.items():
            params.append(("filter[meta]", f"{k}:{_query_value(v, f'filter.meta.{k}', False)}"))
    elif meta is not None:
        params.append(("filter[meta]", _query_value(meta, "filter.meta")))
    params += [(f"filter[{k}]", _query_value(v, f"filter.{k}")) for k, v in filters.items()]
    params += [(f"fields[{k}]", _query_value(v, f"fields.{k}")) for k, v in (fields or {}).items()]
    params += [(f"page[{k}]", _query_value(v, f"page.{k}")) for k, v in (page or {}).items()]
    params += [(k, v) for k, v in (("sort", sort), ("include", include)) if v is not None]
    if tenant_id is not None:
        params.append(("filter[tenant_id]", tenant_id))
    return params


def _query_value(value: Any, where: str, lists: bool = True) -> str:
    """A ``work.list`` value as the query string writes it: ``true``/``false``, a number,
    a text as is, a list (where ``lists``) as a comma list; anything else (an object,
    ``null``) is ``validation_failed``: no filter reads one."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and lists:
        return ",".join(_query_value(v, where, False) for v in value)
    if isinstance(value, str | int | float):
        return str(value)
    why = "must be a string, a number, true or false" + (", or a list of them" if lists else "")
    raise ValidationFailed([problem(where, why, "type")], "the tool arguments failed validation")


def listed(answer: Answer) -> Answer:
    """The orders list with upstream's ``orders`` and ``count`` beside ``data``."""
    status, body = answer
    return status, {**body, "orders": body["data"], "count": len(body["data"])}


def with_recent_events(answer: Answer) -> Answer:
    """``work.get`` as upstream's: the order, its ``items`` and ``recent_events``."""
    status, body = answer
    order = body["order"]
    return status, {**body, "items": order["items"], "recent_events": order["events"]}


def agent_meta(
    agent_id: str | None,
    agent_name: str | None = None,
    agent_version: str | None = None,
    model_name: str | None = None,
    runtime: str | None = None,
) -> AgentMetadata:
    return AgentMetadata(
        agent_id, agent_name, agent_version, model_name, runtime, None, None, "mcp"
    )


def counted(answer: Answer, key: str) -> Answer:
    """Upstream's ``count`` beside a list (``work.logs``' events, ``work.list_parts``'
    parts)."""
    status, body = answer
    return status, {**body, "count": len(body[key])}
