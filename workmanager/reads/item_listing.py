"""The items list of the review console, with the orders list's conventions
(:mod:`.params`): one page of items in one SQL query and its count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import ColumnElement, and_, select, true

from ..db.models import Item
from ..db.predicates import count_rows
from ..services.context import ServiceContext
from ..services.views import item_dict
from ..states import ItemState
from .expiry import with_live_expiry
from .params import (
    ListQuery,
    as_datetime,
    as_int,
    bad,
    compare,
    csv,
    filter_name,
    merged,
    operator_of,
    page,
    paged,
    readable,
    sort_by,
    states,
    uuids,
)

ITEM_SORTS: dict[str, Any] = {
    "priority": Item.priority,
    "created_at": Item.created_at,
    "updated_at": Item.updated_at,
    "lease_expires_at": Item.lease_expires_at,
    "attempts": Item.attempts,
}


_ITEM_FILTERS: dict[str, Callable[[str, str], ColumnElement[bool]]] = {
    "state": lambda v, p: Item.state.in_(states(v, p, (s.value for s in ItemState))),
    "type": lambda v, p: Item.order_type.in_(csv(v)),
    "order_id": lambda v, p: Item.order_id.in_(uuids(v, p)),
    "tenant_id": lambda v, p: Item.tenant_id.in_(csv(v)),
    "agent_id": lambda v, p: Item.leased_by_agent_id.in_(csv(v)),
    "priority": lambda v, p: compare(Item.priority, *operator_of(v, p, as_int)),
    "created_at": lambda v, p: compare(Item.created_at, *operator_of(v, p, as_datetime)),
}


class ItemListing:
    """The items list of the review console, with the orders list's conventions:
    ``filter[state|type|order_id|tenant_id|agent_id|priority|created_at]``, ``sort`` (``-`` for
    descending) and ``page[number]``/``page[size]``; anything unknown is ``InvalidQuery``."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def list(self, params: Iterable[tuple[str, str]], tenant: str | None = None) -> dict[str, Any]:
        """One page; ``tenant`` forced as :meth:`OrderListing.list`'s is."""
        settings = self.ctx.settings
        size = min(settings.default_page_size_http, settings.max_page_size)  # as orders'
        query, sort = ListQuery(size=size), "-updated_at"
        if tenant is not None:
            query.where.append(Item.tenant_id == tenant)
        for param, value in readable(merged(params, ("priority", "created_at"))):
            if param == "sort":
                sort = value
            elif not page(query, param, value, settings.max_page_size):
                handler = _ITEM_FILTERS.get(filter_name(param))
                if handler is None:
                    known = ", ".join(f"filter[{name}]" for name in sorted(_ITEM_FILTERS))
                    raise bad(
                        f"unknown query parameter {param!r}; the filters are {known}, and"
                        " sort, page[number], page[size]",
                        param,
                    )
                query.where.append(handler(value, param))
        order_by = sort_by(sort, ITEM_SORTS, "-updated_at")
        where = and_(true(), *query.where)
        stmt = select(Item).where(where).order_by(*order_by, Item.id)
        stmt = stmt.limit(query.size).offset((query.number - 1) * query.size)
        with self.ctx.db.transaction() as s:
            rows = [item_dict(i) for i in s.scalars(stmt)]
            total = count_rows(s, Item, where)
        return paged(query, with_live_expiry(self.ctx, rows), total)
