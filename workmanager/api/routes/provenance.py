"""Provenance routes: the right to be forgotten (``admin`` scope; ``services/forget.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ...errors import ValidationFailed
from ...services.forget import Forget, Subject
from ...surface.callers import Caller
from ...types import Actor
from .. import responses as R
from ..deps import scope, state
from ..responses import declare
from ..schemas import ForgetBody

router = APIRouter(tags=["provenance"])
AdminCaller = Annotated[Caller, Depends(scope("admin"))]


@router.post(
    "/provenance/forget",
    summary="Erase an agent's or a user's id from every record (admin)",
    responses=declare({200: R.Forgotten}, idempotent=False),
)
def forget(request: Request, caller: AdminCaller, body: ForgetBody) -> JSONResponse:
    if (body.agent_id is None) == (body.user_id is None):
        message = "give exactly one of agent_id and user_id"
        raise ValidationFailed([{"path": "agent_id", "message": message, "validator": "oneOf"}])
    subject = (
        Subject("agent", body.agent_id)
        if body.agent_id is not None
        else Subject("user", body.user_id or "")
    )
    actor = Actor("user", caller.principal.name)
    answer = Forget(state(request).wm.ctx).forget(subject, actor, dry_run=body.dry_run)
    return JSONResponse(answer, 200)
