"""What a checkout that found nothing says beyond ``no_items_available``."""

from __future__ import annotations

import uuid
from typing import Any

from ..container import WorkManager
from ..services.tokens import Principal


def sees_types(principal: Principal) -> bool:
    """Whether a caller is told the deployment's order types (a refusal's ``known``, a
    checkout's hint): not a token bound to a tenant, which sees its own tenant only."""
    return principal.tenant_id is None


def unknown_type(wm: WorkManager, type: str | None, order_id: uuid.UUID | None) -> dict[str, Any]:
    """A type filter no registered order type has (a typo polls an empty queue for
    ever), or an order of a type this server does not register (checkouts lease only the
    types their process knows): the details and hint of the 409 that say so; empty
    otherwise. An item type a plan set on its own may still be right: the answer stays
    the same 409."""
    asked = type
    if asked is None and order_id is not None:
        asked = wm.queries.order_type(order_id)  # on the 409's path only
    if asked is None or asked in wm.registry:
        return {}
    known = wm.registry.names()
    hint = (
        "unless a plan names that item type, check the spelling"
        if type is not None
        else "its items are leased by a server or agent that registers it"
    )
    return {
        "details": {"type": asked, "known_types": known},
        "hint": f"no order type {asked!r} is registered here (known: "
        f"{', '.join(known) or 'none'}); {hint}",
    }
