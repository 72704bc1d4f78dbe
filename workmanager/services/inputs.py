"""Checks of what callers send (shapes the JSON Schemas of order types do not cover),
shared by the agent API and the order service."""

from __future__ import annotations

import dataclasses
import operator
import uuid
from typing import Any, TypeVar

from ..durations import MAX_WAIT_SECONDS
from ..errors import InvalidAgentMetadata, InvalidQuery, ValidationFailed, problem
from ..jsonvalues import MAX_JSON_DEPTH_CEILING, json_fields
from ..lease_tokens import Holder
from ..leases.base import CheckoutQuery
from ..semver import is_semver
from ..types import NAME_MAX, Actor, AgentInfo, Lease, agent_id_problem, as_id, is_name


def require(condition: bool, path: str, message: str, validator: str = "type") -> None:
    if not condition:
        raise ValidationFailed.at(path, message, validator)


def notes_problem(notes: Any) -> dict[str, str] | None:
    """What is wrong with a submit's or a part's ``notes`` (a text column, as HTTP and
    MCP declare it), if anything."""
    if notes is not None and not isinstance(notes, str):
        return problem("notes", "must be a string", "type")
    return None


def presented_item(value: str | None) -> uuid.UUID | None:
    """The item id a lease call names (an HTTP path, an MCP argument, an idempotency key's
    target), when it is one: what is read with the token or the key's claim. A malformed
    id is refused by the operation itself, after authentication."""
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def agent_of(agent: AgentInfo | str | None, lease: Lease | None = None) -> AgentInfo:
    """The acting agent, checked as HTTP and MCP check theirs (a Python caller's
    ``"a\x00b"`` or 200-character id was stored by SQLite and refused by PostgreSQL's
    driver; a lone surrogate was a raw ``UnicodeEncodeError``; a version ``"abc"`` was
    stored)."""
    if isinstance(agent, AgentInfo):
        check_agent_metadata(agent.id, agent)
        return agent
    if agent is not None and agent != "":
        check_agent_metadata(agent, None)
        return AgentInfo(id=agent)
    if lease is not None and lease.agent_id:  # no agent named: the lease's holder acts
        return lease.agent
    raise ValidationFailed.at("agent_id", "an agent id is required", "required")


#: (attribute, field named in the error, most characters): what the caller says about
#: itself, each 1 to the size of its provenance column; ``principal``: a library caller's
#: (the adapters set it from the token).
_NAMED = (
    ("name", "name", NAME_MAX),
    ("model_name", "model_name", NAME_MAX),
    ("runtime", "runtime", NAME_MAX),
    ("request_id", "request_id", NAME_MAX),
    ("version", "agent_version", 64),
    ("principal", "principal", NAME_MAX),
)
#: The client's address (the connection's, or a trusted proxy's ``X-Forwarded-For``).
_MAX_ADDRESS = 64
_NO_NUL = ("name", "model_name", "runtime", "request_id", "user_agent", "principal")
#: Every text field, as (attribute, field named in the error).
_TEXT = (
    *((a, f) for a, f, _ in _NAMED),
    ("ip_address", "ip_address"),
    ("user_agent", "user_agent"),
)


def checked_agent(agent: AgentInfo | str | None) -> AgentInfo | None:
    """``agent`` (who proposes, approves or rejects, when a caller names one: an
    :class:`AgentInfo` or its id, as the agent calls take), checked by
    :func:`check_agent_metadata`."""
    if isinstance(agent, str):
        check_agent_metadata(agent, None)
        return AgentInfo(id=agent)
    if agent is not None:
        check_agent_metadata(getattr(agent, "id", agent), agent)
    return agent


_Who = TypeVar("_Who", bound=Actor | None)


def checked_actor(actor: _Who, field: str = "actor") -> _Who:
    """``actor`` when it is an :class:`Actor` (or ``None``, where one may be left out);
    anything else is refused at ``field`` (a library caller's ``actor="me"`` was an
    ``AttributeError`` deep inside)."""
    if actor is None or isinstance(actor, Actor):
        return actor
    said = f"must be an Actor, e.g. Actor('user', 'alice'), not {type(actor).__name__}"
    raise ValidationFailed.at(field, said, "type")


def check_agent_metadata(agent_id: Any, meta: Any) -> None:
    """The one rule for what an agent says about itself, on every surface: its id
    (:func:`~workmanager.types.agent_id_problem`), a semantic version, and every field
    the provenance row stores being text that fits its column on every database
    (``meta``: an :class:`AgentInfo` or the adapters' metadata; ``None``: the id alone).
    A value that does not is refused here (``invalid_agent_metadata``) with its field
    named, never by the driver."""
    errors = []
    why = None if agent_id is None else agent_id_problem(agent_id)
    if why is not None:
        errors.append({"field": "agent_id", "message": why})
    if meta is not None:
        errors += _metadata_problems(meta)
    if errors:
        raise InvalidAgentMetadata("invalid agent metadata", details=errors)


def _metadata_problems(meta: Any) -> list[dict[str, str]]:
    text: dict[str, Any] = {name: getattr(meta, name, None) for name, _ in _TEXT}
    errors = [
        {"field": named, "message": "must be text"}
        for name, named in _TEXT
        if text[name] is not None and not isinstance(text[name], str)
    ]
    if errors:  # the checks below read them as text
        return errors
    if text["version"] is not None and not is_semver(text["version"]):
        errors.append({"field": "agent_version", "message": "must be a semantic version"})
    for name, named, most in _NAMED:
        value = text[name]
        if value is not None and (not value.strip() or len(value) > most):
            errors.append({"field": named, "message": f"1 to {most} characters"})
    if text["ip_address"] is not None and len(text["ip_address"]) > _MAX_ADDRESS:
        why = f"longer than {_MAX_ADDRESS} characters: is X-Forwarded-For an address?"
        errors.append({"field": "ip_address", "message": why})
    for name in _NO_NUL:
        if "\x00" in (text[name] or ""):
            errors.append({"field": name, "message": "must not contain NUL characters"})
    return errors


def lease_caller(agent: AgentInfo | str | None, lease: Any) -> AgentInfo:
    """The agent acting on ``lease`` (:func:`agent_of`), once ``lease`` is the
    :class:`Lease` checkout returned: an item id, a token string or ``None`` (checkout
    found nothing) is refused naming it, not an ``AttributeError`` from deep inside."""
    if not isinstance(lease, Lease):
        why = (
            "checkout returned None (no item was available): check for None before using it"
            if lease is None
            else f"pass the Lease checkout returned, not a {type(lease).__name__}"
        )
        raise ValidationFailed.at("lease", why, "type", f"not a lease: {why}")
    return agent_of(agent, lease)


#: Priorities are 32-bit integers (the column, and the HTTP schema's bounds).
PRIORITY_RANGE = range(-(2**31), 2**31)


def checkout_query(
    order_id: Any, type: Any, min_priority: Any, tenant_id: Any, item_id: Any
) -> CheckoutQuery:
    """The filters of a checkout, checked: a Python caller (a handler, a script) is not
    held to types the way HTTP and MCP requests are, and a filter of the wrong type must
    be a 422 that names it, not a database error. Ids that are not UUIDs are 404, as SPEC
    §6.1 has it for every id."""
    if (order_id, type, min_priority, tenant_id, item_id) == (None,) * 5:
        return _GLOBAL  # the commonest checkout: nothing to check
    for path, value in (("type", type), ("tenant_id", tenant_id)):
        require(value is None or is_name(value), path, f"must be 1 to {NAME_MAX} characters")
    if min_priority is not None:
        try:
            require(not isinstance(min_priority, bool), "min_priority", "must be an integer")
            min_priority = operator.index(min_priority)
        except TypeError:
            require(False, "min_priority", "must be an integer")
        require(min_priority in PRIORITY_RANGE, "min_priority", "must fit in 32 bits", "maximum")
    json_fields({"type": type, "tenant_id": tenant_id}, MAX_JSON_DEPTH_CEILING)
    return CheckoutQuery(
        _uuid(order_id, "order"), type, min_priority, tenant_id, _uuid(item_id, "item")
    )


_GLOBAL = CheckoutQuery()


def _uuid(value: Any, kind: str) -> uuid.UUID | None:
    return None if value is None else as_id(value, kind)


def as_presented(lease: Lease, agent: AgentInfo) -> Holder:
    """What the lease checks compare for ``lease`` as presented by ``agent`` (an HTTP caller
    names itself in a header): the agent, the token's fence and its secret's hash."""
    holder = lease.holder
    return holder if holder.agent_id == agent.id else dataclasses.replace(holder, agent_id=agent.id)


def check_progress(progress: Any, checkpoint: Any) -> None:
    errors = []
    if progress is not None and (
        isinstance(progress, bool)
        or not isinstance(progress, int | float)
        or not 0 <= progress <= 1
    ):
        errors.append(problem("progress", "must be a number from 0 to 1", "maximum"))
    if checkpoint is not None and not isinstance(checkpoint, dict):
        errors.append(problem("checkpoint", "must be an object", "type"))
    if errors:
        raise ValidationFailed(errors)


def is_code(value: Any) -> bool:
    """An error code an agent or a reviewer gives (a fail's, a reject's): 1 to
    :data:`NAME_MAX` printable characters, not blank (``"   "``, or a line break in it, was
    stored, logged and counted as a code)."""
    return is_name(value) and value.isprintable() and bool(value.strip())


CODE_RULE = f"printable text of 1 to {NAME_MAX} characters, not blank"


def check_error(error: Any) -> None:
    ok = isinstance(error, dict) and is_code(error.get("code"))
    if not ok or not isinstance(error.get("message"), str):
        raise ValidationFailed.at(
            "error", f"must be {{code, message}} strings, code {CODE_RULE}", "required"
        )


def reject_errors(errors: Any) -> list[dict[str, Any]]:
    """A reject's ``errors`` as stored: each ``{code, message, field?}`` and nothing else
    (``field`` left out when null), whichever surface sent them; else 422 naming each
    entry's field that is wrong (``errors.0.code``), as HTTP's body check names it."""
    shape = "a list of at least one {code, message, field?}"
    if not isinstance(errors, list):
        raise ValidationFailed.at("errors", f"must be {shape}", "type")
    require(len(errors) >= 1, "errors", f"must be {shape}", "minItems")
    found = [p for n, e in enumerate(errors) for p in _reject_error_problems(f"errors.{n}", e)]
    if found:
        raise ValidationFailed(found, f"{len(found)} validation error(s) in errors")
    kept = ("code", "message", "field")
    return [{k: e[k] for k in kept if e.get(k) is not None} for e in errors]


def _reject_error_problems(at: str, entry: Any) -> list[dict[str, str]]:
    if not isinstance(entry, dict):
        return [problem(at, "must be an object {code, message, field?}", "type")]
    found = []
    if "code" not in entry:
        found.append(problem(f"{at}.code", "required", "missing"))
    elif not is_code(entry["code"]):
        found.append(problem(f"{at}.code", f"must be {CODE_RULE}", "type"))
    if "message" not in entry:
        found.append(problem(f"{at}.message", "required", "missing"))
    elif not isinstance(entry["message"], str):
        found.append(problem(f"{at}.message", "must be text", "type"))
    if entry.get("field") is not None and not isinstance(entry["field"], str):
        found.append(problem(f"{at}.field", "must be text or null", "type"))
    return found


FINALIZE_MODES = ("strict", "best_effort")


def check_finalize_mode(mode: Any) -> None:
    if mode not in FINALIZE_MODES:
        raise ValidationFailed.at("mode", "must be strict or best_effort", "enum")


def checked_wait(wait: Any) -> float | None:
    """An approve's ``wait``: seconds from 0 to :data:`MAX_WAIT_SECONDS` (HTTP's query
    parameter and MCP's argument alike), else 400 ``invalid_query`` naming it."""
    if wait is None:
        return None
    number = isinstance(wait, int | float) and not isinstance(wait, bool)
    if not number or not 0 <= wait <= MAX_WAIT_SECONDS:
        raise InvalidQuery(
            f"wait: seconds from 0 to {MAX_WAIT_SECONDS:g}, got {wait!r}",
            details=[{"path": "wait", "message": f"0 to {MAX_WAIT_SECONDS:g} seconds"}],
        )
    return float(wait)
