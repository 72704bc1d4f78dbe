"""Provenance routes: the right to be forgotten (``admin`` scope; ``services/forget.py``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ...errors import Forbidden, ValidationFailed
from ...services.forget import Forget, Subject
from ...types import Actor
from .. import responses as R
from ..deps import AdminAuth, state
from ..query import known_query
from ..responses import declare
from ..schemas import ForgetBody

router = APIRouter(tags=["provenance"], dependencies=[Depends(known_query)])


@router.post(
    "/provenance/forget",
    summary="Erase an agent's or a user's id from every record (admin)",
    responses=declare({200: R.Forgotten}, idempotent=False),
)
def forget(request: Request, auth: AdminAuth, body: ForgetBody) -> JSONResponse:
    caller = auth.caller()
    if caller.principal.tenant_id is not None:
        # An agent's or a user's records span every tenant: a tenant's token may not
        # erase (or count) another tenant's.
        raise Forbidden(
            "forgetting spans every tenant: use a token bound to no tenant",
            details={"tenant_id": caller.principal.tenant_id},
        )
    if (body.agent_id is None) == (body.user_id is None):
        message = "give exactly one of agent_id and user_id"
        raise ValidationFailed.at("agent_id", message, "oneOf")
    subject = (
        Subject("agent", body.agent_id)
        if body.agent_id is not None
        else Subject("user", body.user_id or "")
    )
    actor = Actor("user", caller.principal.name)
    answer = Forget(state(request).wm.ctx).forget(subject, actor, dry_run=body.dry_run)
    return JSONResponse(answer, 200)
