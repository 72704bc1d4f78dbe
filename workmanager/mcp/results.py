"""Tool results: ``{"success": true, ...}`` or
``{"success": false, "code", "error", "details"?}``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import WorkManagerError
from ..services.operations import Answer

log = logging.getLogger("workmanager.mcp")
Result = dict[str, Any]


def failure(error: WorkManagerError) -> Result:
    out: Result = {"success": False, "code": error.code, "error": error.message}
    if error.details is not None:
        out["details"] = error.details
    return out


def run(call: Callable[[], Answer]) -> Result:
    """Run one operation; every error becomes a failure result (never an exception)."""
    try:
        _status, body = call()
    except WorkManagerError as exc:
        return failure(exc)
    except Exception:
        log.exception("MCP tool failed")
        return {"success": False, "code": "internal_error", "error": "internal error"}
    return {"success": True, **body}
