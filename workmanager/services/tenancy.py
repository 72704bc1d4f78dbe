"""Tenants: the one place where a token bound to a tenant is kept inside it.

An order belongs to the tenant named when it was proposed (``work_orders.tenant_id``); its
items inherit it (``work_items.tenant_id``). A token bound to a tenant
(``tokens create --tenant T``) proposes into, sees, leases and acts on that tenant's
orders and items only. Another tenant's id is answered exactly as an unknown id (404
``not_found``), so ids do not leak; lists and checkout are narrowed to the tenant. A token
bound to no tenant (and ``WORK_MANAGER_AUTH=none``) sees every tenant, as an operator's.

:class:`~.operations.Operations` resolves every id through :func:`require_order` /
:func:`require_item` and forces the tenant of checkout and of the listings
(:mod:`.listing`); every adapter (HTTP, MCP, console) goes through it.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from ..db.models import Item, Order
from ..db.session import Database
from ..errors import Forbidden, NotFound, ValidationFailed

MAX_TENANT_LENGTH = 191


def checked_tenant(value: Any, path: str = "tenant_id") -> str | None:
    """A tenant id as given (``None`` or ``""``: no tenant); a string of 1..191 chars."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_TENANT_LENGTH:
        raise ValidationFailed.at(path, f"a string of 1 to {MAX_TENANT_LENGTH} characters", "type")
    return value


def proposal_tenant(bound: str | None, requested: Any) -> str | None:
    """The tenant a proposal goes into: the token's (naming another one is 403
    ``forbidden``: it is the caller's own input, nothing is revealed), else the one the
    body names."""
    named = checked_tenant(requested)
    if bound is None or named is None or named == bound:
        return bound or named
    raise Forbidden(
        "this token proposes into its own tenant only",
        details={"tenant_id": named},
    )


def checkout_tenant(bound: str | None, requested: Any) -> tuple[str | None, bool]:
    """The tenant filter of a checkout and whether anything can match: a bound token's
    checkout is always narrowed to its tenant; asking it for another tenant finds
    nothing (the same answer as an empty queue)."""
    named = checked_tenant(requested)
    if bound is None:
        return named, True
    return bound, named is None or named == bound


def payload_tenant(payload: Any) -> str | None:
    """The tenant an order gets when the proposal names none: its payload's ``tenant_id``
    key (how items were given a tenant before orders had one; kept for compatibility)."""
    value = payload.get("tenant_id") if isinstance(payload, dict) else None
    return None if value is None else str(value)[:MAX_TENANT_LENGTH]


def require_order(db: Database, order_id: uuid.UUID, tenant: str | None) -> None:
    """For a token bound to ``tenant``: the order must exist in it, else 404 (an order of
    another tenant is answered as an unknown one). Unbound: nothing to check here (the
    service says 404 for an unknown id itself)."""
    _require(db, Order, order_id, tenant, "order")


def require_item(db: Database, item_id: uuid.UUID, tenant: str | None) -> None:
    """:func:`require_order` for an item (its own, inherited, ``tenant_id``)."""
    _require(db, Item, item_id, tenant, "item")


def _require(db: Database, model: Any, id_: uuid.UUID, tenant: str | None, kind: str) -> None:
    if tenant is None:
        return
    with db.transaction() as s:
        found = s.scalar(select(model.tenant_id).where(model.id == id_))
    if found != tenant:
        raise NotFound(f"{kind} {id_} not found", details={f"{kind}_id": str(id_)})


def item_visible(item_tenant: str | None, tenant: str | None) -> bool:
    """Whether a token bound to ``tenant`` (``None``: unbound) may see an item of
    ``item_tenant``."""
    return tenant is None or item_tenant == tenant
