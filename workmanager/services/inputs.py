"""Checks of what callers send (shapes the JSON Schemas of order types do not cover),
shared by the agent API and the order service."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ValidationFailed
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
