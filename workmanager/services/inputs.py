"""Checks of what callers send (shapes the JSON Schemas of order types do not cover),
shared by the agent API and the order service."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from ..errors import ValidationFailed
from ..jsonvalues import json_value
from ..leases.base import CheckoutQuery
from ..types import AgentInfo, Lease


def require(condition: bool, path: str, message: str, validator: str = "type") -> None:
    if not condition:
        raise ValidationFailed([{"path": path, "message": message, "validator": validator}])


def agent_of(agent: AgentInfo | str | None, lease: Lease | None = None) -> AgentInfo:
    if isinstance(agent, AgentInfo):
        return agent
    agent_id = agent or (lease.agent_id if lease else None)
    if not agent_id:
        raise ValidationFailed(
            [{"path": "agent_id", "message": "an agent id is required", "validator": "required"}]
        )
    return AgentInfo(id=agent_id)


def checkout_query(
    order_id: Any, type: Any, min_priority: Any, tenant_id: Any, item_id: Any
) -> CheckoutQuery:
    """The filters of a checkout, checked: a Python caller (a handler, a script) is not
    held to types the way HTTP and MCP requests are, and a filter of the wrong type must
    be a 422 that names it, not a database error."""
    for path, value in (("type", type), ("tenant_id", tenant_id)):
        require(value is None or isinstance(value, str), path, "must be a string")
    require(
        min_priority is None
        or (isinstance(min_priority, int) and not isinstance(min_priority, bool)),
        "min_priority",
        "must be an integer",
    )
    json_value({"type": type, "tenant_id": tenant_id}, "$")
    return CheckoutQuery(
        _uuid(order_id, "order_id"), type, min_priority, tenant_id, _uuid(item_id, "item_id")
    )


def _uuid(value: Any, path: str) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValidationFailed([{"path": path, "message": "must be a UUID", "validator": "format"}])


def as_presented(lease: Lease, agent: AgentInfo) -> Lease:
    """The lease as presented by ``agent`` (an HTTP caller names itself in a header)."""
    return lease if lease.agent_id == agent.id else dataclasses.replace(lease, agent_id=agent.id)


def check_progress(progress: Any, checkpoint: Any) -> None:
    errors = []
    if progress is not None and (
        isinstance(progress, bool)
        or not isinstance(progress, int | float)
        or not 0 <= progress <= 1
    ):
        errors.append(
            {"path": "progress", "message": "must be a number from 0 to 1", "validator": "maximum"}
        )
    if checkpoint is not None and not isinstance(checkpoint, dict):
        errors.append({"path": "checkpoint", "message": "must be an object", "validator": "type"})
    if errors:
        raise ValidationFailed(errors)


def check_error(error: Any) -> None:
    ok = (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and error["code"]
        and isinstance(error.get("message"), str)
    )
    if not ok:
        raise ValidationFailed(
            [
                {
                    "path": "error",
                    "message": "must be {code, message} strings",
                    "validator": "required",
                }
            ]
        )


def check_reject_errors(errors: Any) -> None:
    ok = (
        isinstance(errors, list)
        and len(errors) >= 1
        and all(
            isinstance(e, dict)
            and isinstance(e.get("code"), str)
            and isinstance(e.get("message"), str)
            and (e.get("field") is None or isinstance(e.get("field"), str))
            for e in errors
        )
    )
    require(ok, "errors", "must be a list of at least one {code, message, field?}", "minItems")


FINALIZE_MODES = ("strict", "best_effort")


def check_finalize_mode(mode: Any) -> None:
    if mode not in FINALIZE_MODES:
        raise ValidationFailed(
            [{"path": "mode", "message": "must be strict or best_effort", "validator": "enum"}]
        )
