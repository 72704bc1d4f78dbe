"""Tool results: ``{"success": true, ...}`` or
``{"success": false, "code", "error", "details"?}``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from mcp.types import CallToolResult, InputRequiredResult, TextContent

from .. import saying
from ..errors import NotFound, Unavailable, WorkManagerError
from ..services.idempotency import Replay
from ..surface.operations import Answer

log = logging.getLogger("workmanager.mcp")
Result = dict[str, Any]


def failure(error: WorkManagerError) -> Result:
    if isinstance(error, Unavailable):
        saying.unavailable(error.code, error.message, type(error).__name__, "an MCP tool call")
    out: Result = {"success": False, "code": error.code, "error": error.message}
    if error.details is not None:
        out["details"] = error.details
    return out


def _flat(error: dict[str, Any]) -> Result:
    """A stored ``{"code", "message", "details"?}`` as a failure result's fields."""
    out: Result = {"code": error.get("code"), "error": error.get("message")}
    if error.get("details") is not None:
        out["details"] = error["details"]
    return out


def run(call: Callable[[], Answer | Replay]) -> Result:
    """Run one operation; every error becomes a failure result (never an exception).

    A replay of an idempotent call answers its stored result with ``"replayed": true``.
    """
    try:
        answer = call()
    except WorkManagerError as exc:
        return failure(exc)
    except Exception:
        log.exception("MCP tool failed")
        return {"success": False, "code": "internal_error", "error": "internal error"}
    if isinstance(answer, Replay):
        error = answer.body.get("error") if answer.status >= 400 else None
        if isinstance(error, dict):  # a refusal stored with what it committed
            return {"success": False, **_flat(error), "replayed": True}
        return {"success": True, **answer.body, "replayed": True}
    return {"success": True, **answer[1]}


def unknown_tool(name: str, names: list[str]) -> CallToolResult:
    """A call to a tool the server has not: a §7 refusal (``not_found``) naming the closest
    tool and every one, where the MCP library answered only ``Unknown tool: <name>``."""
    from difflib import get_close_matches

    close = get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    body = failure(
        NotFound(
            f"unknown tool {name!r}; {hint}the tools are {', '.join(sorted(names))}",
            details={"tool": name},
        )
    )
    text = json.dumps(body, indent=2)
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=body, is_error=True
    )


def flagged(answer: CallToolResult | InputRequiredResult) -> CallToolResult | InputRequiredResult:
    """A refusal (``"success": false``, SPEC §7) is also ``isError: true``, as MCP says a
    tool's own error is: a client that reads only the flag took every refusal for a
    success."""
    if not isinstance(answer, CallToolResult) or not isinstance(answer.structured_content, dict):
        return answer
    body = answer.structured_content
    body = body.get("result", body) if isinstance(body.get("result"), dict) else body
    if body.get("success") is False:
        return answer.model_copy(update={"is_error": True})
    return answer


def version() -> str:
    """The installed package's version, as ``initialize`` names the server."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("workmanager")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "0+unknown"
