"""The orders list (SPEC §6.2): filters, sorts and pages, all in one SQL query.

``items_count`` is a correlated subquery, item and provenance filters are ``EXISTS``
clauses (served by ``ix_work_items_order_state`` / ``ix_work_provenance_*``), so a page
costs two statements (rows, total) whatever its size. Anything unknown is ``InvalidQuery``.
"""

from __future__ import annotations

import ipaddress
import operator
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, not_, or_, select, true
from sqlalchemy.sql import Select

from ..db.models import Event, Item, Order, Provenance
from ..db.predicates import count_rows
from ..errors import InvalidQuery
from ..provenance.default import anonymize_ip
from ..services.context import ServiceContext
from ..services.views import event_dict, item_dict, order_dict
from ..states import ItemState, OrderState

DEFAULT_SORT = "-priority,created_at"
DEFAULT_SIZE, MAX_SIZE = 50, 100
_OPERATOR = re.compile(r"^(>=|<=|<>|!=|>|<|=)?(.*)$")
_FILTER = re.compile(r"^filter\[([a-z_.]+)\]$")

ITEMS_COUNT = (
    select(func.count(Item.id))
    .where(Item.order_id == Order.id)
    .correlate(Order)
    .scalar_subquery()
    .label("items_count")
)
SORTS: dict[str, Any] = {
    "priority": Order.priority,
    "created_at": Order.created_at,
    "last_transitioned_at": Order.last_transitioned_at,
    "applied_at": Order.applied_at,
    "completed_at": Order.completed_at,
    "items_count": ITEMS_COUNT,
}


@dataclass
class ListQuery:
    """A parsed query string: conditions, sort columns and the page."""

    where: list[ColumnElement[bool]] = field(default_factory=list)
    order_by: list[Any] = field(default_factory=list)
    size: int = DEFAULT_SIZE
    number: int = 1
    #: ``include=``: ``items``, ``events``, ``events_count`` (``items_count`` is always there)
    include: set[str] = field(default_factory=set)
    #: ``fields[work_orders|items|events]=a,b``: the keys kept in each kind of row
    fields: dict[str, list[str]] = field(default_factory=dict)


#: upstream's ``include`` names (camelCase counts too) → ours
INCLUDES = {
    "items": "items",
    "events": "events",
    "itemsCount": "items_count",
    "items_count": "items_count",
    "eventsCount": "events_count",
    "events_count": "events_count",
}
_FIELDS = re.compile(r"^fields\[([a-z_]+)\]$")
FIELD_KINDS = {"orders": "work_orders"} | {k: k for k in ("work_orders", "items", "events")}


def _bad(message: str, param: str) -> InvalidQuery:
    return InvalidQuery(message, details={"parameter": param})


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _states(value: str, param: str, allowed: Iterable[str]) -> list[str]:
    values, known = _csv(value), set(allowed)
    bad = [v for v in values if v not in known]
    if not values or bad:
        raise _bad(f"{param}: unknown state(s) {bad or value!r}", param)
    return values


_COMPARISONS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "=": operator.eq,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "<>": operator.ne,
    "!=": operator.ne,
}


def _compare(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    return _COMPARISONS[op](column, value)


def _operator(value: str, param: str, parse: Callable[[str], Any]) -> tuple[str, Any]:
    match = _OPERATOR.match(value.strip())
    op, raw = (match.group(1) or "=", match.group(2).strip()) if match else ("=", value)
    try:
        return op, parse(raw)
    except (ValueError, OverflowError):
        raise _bad(f"{param}: cannot read {raw!r}", param) from None


def _datetime(raw: str) -> datetime:
    value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)  # here, so an out-of-range instant is a 400, not a 500


def _int(raw: str) -> int:
    number = int(raw)
    if abs(number) > 2**31 - 1:
        raise ValueError(raw)
    return number


def _bool(value: str, param: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise _bad(f"{param}: expected true or false", param)


def _page(query: ListQuery, param: str, value: str, limit: int) -> bool:
    """Read a page parameter (``page[size]``/``limit``/``per_page``, ``page[number]``/
    ``page``) into ``query``; ``False`` when ``param`` is none of them."""
    if param in ("page[size]", "limit", "per_page"):
        query.size = min(max(_operator(value, param, _int)[1], 1), limit)
    elif param in ("page[number]", "page"):
        query.number = max(_operator(value, param, _int)[1], 1)
    else:
        return False
    return True


def _paged(query: ListQuery, data: list[dict[str, Any]], total: int) -> dict[str, Any]:
    last_page = max(1, -(-total // query.size))
    meta = {"current_page": query.number, "per_page": query.size, "total": total}
    return {"data": data, "meta": {**meta, "last_page": last_page}}


def _filter_name(param: str) -> str:
    """``filter[name]`` → ``name``; bare ``state`` and ``type`` are filters too."""
    match = _FILTER.match(param)
    return match.group(1) if match else param if param in ("state", "type") else ""


def _items_exist(*conds: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists().where(Item.order_id == Order.id, *conds)


def _provenance_exists(column: Any, values: list[str]) -> ColumnElement[bool]:
    return exists().where(Provenance.order_id == Order.id, column.in_(values))


def _meta(value: str, param: str) -> ColumnElement[bool]:
    key, sep, expected = value.partition(":")
    if not sep or not key:
        raise _bad(f"{param}: expected key:value", param)
    cond: ColumnElement[bool] = Order.meta[key].as_string() == expected
    return cond


def related(s: Any, data: list[dict[str, Any]], include: set[str]) -> None:
    """Add the included relations (upstream's ``include=items,events,eventsCount``) to the
    rows of one page, one statement per relation."""
    ids = [uuid.UUID(row["id"]) for row in data]
    if not ids or not include - {"items_count"}:
        return
    by_id = {row["id"]: row for row in data}
    if "items" in include:
        for row in data:
            row["items"] = []
        items = s.scalars(select(Item).where(Item.order_id.in_(ids)).order_by(Item.created_at))
        for item in items:
            by_id[str(item.order_id)]["items"].append(item_dict(item))
    if "events" in include or "events_count" in include:
        for row in data:
            row.setdefault("events", [])
        events = s.scalars(select(Event).where(Event.order_id.in_(ids)).order_by(Event.id))
        for event in events:
            by_id[str(event.order_id)]["events"].append(event_dict(event))
        for row in data:
            row["events_count"] = len(row["events"])
            if "events" not in include:
                del row["events"]


def sparse(row: dict[str, Any], fields: dict[str, list[str]]) -> dict[str, Any]:
    """Upstream's sparse fieldsets: only the named keys of each kind of row (included
    relations keep their key; ``fields[items]`` trims each item)."""
    kept = fields.get("work_orders")
    out = row if kept is None else {k: v for k, v in row.items() if k in kept or k in RELATIONS}
    for kind in ("items", "events"):
        if kind in fields and isinstance(out.get(kind), list):
            out[kind] = [{k: v for k, v in r.items() if k in fields[kind]} for r in out[kind]]
    return out


RELATIONS = ("items", "events", "events_count")


class OrderListing:
    """``list(params)`` → ``{"data": [...], "meta": {current_page, per_page, total,
    last_page}}``."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def list(
        self,
        params: Iterable[tuple[str, str]],
        size: int | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """One page; ``size`` is the default page size of the surface asking (MCP's is
        smaller than HTTP's, as upstream's). ``tenant``: the tenant of a token bound to one
        (services/tenancy.py), forced beside the query's own filters (a
        ``filter[tenant_id]`` naming another tenant then finds nothing)."""
        query = self.parse(params, size)
        if tenant is not None:
            query.where.append(Order.tenant_id == tenant)
        stmt: Select[Any] = select(Order, ITEMS_COUNT).where(and_(true(), *query.where))
        stmt = stmt.order_by(*query.order_by, Order.id)
        stmt = stmt.limit(query.size).offset((query.number - 1) * query.size)
        with self.ctx.db.transaction() as s:
            rows = s.execute(stmt).all()
            total = count_rows(s, Order, *query.where)
            data = [{**order_dict(order), "items_count": int(count)} for order, count in rows]
            related(s, data, query.include)
        return _paged(query, [sparse(row, query.fields) for row in data], total)

    def parse(self, params: Iterable[tuple[str, str]], size: int | None = None) -> ListQuery:
        settings = self.ctx.settings
        limit = settings.max_page_size
        query, sort = (
            ListQuery(size=min(size or settings.default_page_size_http, limit)),
            DEFAULT_SORT,
        )
        for param, value in params:
            if param == "sort":
                sort = value
            elif _page(query, param, value, limit):
                continue
            elif param == "include":
                for name in _csv(value):
                    if name not in INCLUDES:
                        raise _bad(f"unknown include {name!r}; one of {', '.join(INCLUDES)}", param)
                    query.include.add(INCLUDES[name])
            elif (fields := _FIELDS.match(param)) is not None:
                kind = FIELD_KINDS.get(fields.group(1))
                if kind is None:
                    raise _bad(f"{param}: one of fields[work_orders|items|events]", param)
                query.fields[kind] = _csv(value)
            else:
                query.where.append(self._filter(param, value))
        query.order_by = _sort(sort, SORTS, DEFAULT_SORT)
        return query

    def _filter(self, param: str, value: str) -> ColumnElement[bool]:
        handler = _FILTERS.get(_filter_name(param))
        if handler is None:
            raise _bad(f"unknown query parameter {param!r}", param)
        return handler(value, param, self.ctx)


def _sort(value: str, sorts: dict[str, Any], default: str) -> list[Any]:
    columns = []
    for token in _csv(value) or _csv(default):
        name = token.lstrip("-")
        column = sorts.get(name)
        if column is None:
            raise _bad(f"unknown sort {name!r}; one of {', '.join(sorts)}", "sort")
        columns.append(column.desc() if token.startswith("-") else column.asc())
    return columns


def _has_available(value: str, param: str, ctx: ServiceContext) -> ColumnElement[bool]:
    now = ctx.clock()
    cond = _items_exist(
        Item.state == ItemState.QUEUED.value,
        or_(Item.available_at.is_(None), Item.available_at <= now),
    )
    return cond if _bool(value, param) else not_(cond)


_Handler = Callable[[str, str, ServiceContext], ColumnElement[bool]]


def _at(column: Any) -> _Handler:
    return lambda v, p, _: _compare(column, *_operator(v, p, _datetime))


_FILTERS: dict[str, _Handler] = {
    "state": lambda v, p, _: Order.state.in_(_states(v, p, (s.value for s in OrderState))),
    "type": lambda v, p, _: Order.type.in_(_csv(v)),
    "id": lambda v, p, _: Order.id.in_(_uuids(v, p)),
    "requested_by_id": lambda v, p, _: Order.requested_by_id.in_(_csv(v)),
    "tenant_id": lambda v, p, _: Order.tenant_id.in_(_csv(v)),
    "priority": lambda v, p, _: _compare(Order.priority, *_operator(v, p, _int)),
    "requested_by_type": lambda v, p, _: Order.requested_by_type.in_(_csv(v)),
    "created_at": _at(Order.created_at),
    "last_transitioned_at": _at(Order.last_transitioned_at),
    "applied_at": _at(Order.applied_at),
    "completed_at": _at(Order.completed_at),
    "items.state": lambda v, p, _: _items_exist(
        Item.state.in_(_states(v, p, (s.value for s in ItemState)))
    ),
    "meta": lambda v, p, _: _meta(v, p),
    "has_available_items": _has_available,
    "agent_id": lambda v, p, _: _provenance_exists(Provenance.agent_id, _csv(v)),
    "model_name": lambda v, p, _: _provenance_exists(Provenance.model_name, _csv(v)),
    "ip_address": lambda v, p, ctx: _provenance_exists(Provenance.ip_address, _ips(v, ctx)),
}


def _ips(value: str, ctx: ServiceContext) -> list[str]:
    """Addresses as the default enricher stores them: in canonical form, and anonymised
    when the setting is on (so a full address finds its anonymised rows)."""
    out = []
    for raw in _csv(value):
        try:
            ip = str(ipaddress.ip_address(raw))
        except ValueError:
            out.append(raw)  # not an address: matches whatever was stored as is
            continue
        if ctx.settings.provenance_anonymize_ip:
            ip = anonymize_ip(ip) or ip
        out.append(ip)
    return out


def _uuids(value: str, param: str) -> list[Any]:
    try:
        return [uuid.UUID(v) for v in _csv(value)]
    except ValueError:
        # An id that is not a UUID matches no order (like a 404), rather than failing.
        return []


ITEM_SORTS: dict[str, Any] = {
    "priority": Item.priority,
    "created_at": Item.created_at,
    "updated_at": Item.updated_at,
    "lease_expires_at": Item.lease_expires_at,
    "attempts": Item.attempts,
}
_ITEM_FILTERS: dict[str, Callable[[str, str], ColumnElement[bool]]] = {
    "state": lambda v, p: Item.state.in_(_states(v, p, (s.value for s in ItemState))),
    "type": lambda v, p: Item.order_type.in_(_csv(v)),
    "order_id": lambda v, p: Item.order_id.in_(_uuids(v, p)),
    "tenant_id": lambda v, p: Item.tenant_id.in_(_csv(v)),
    "agent_id": lambda v, p: Item.leased_by_agent_id.in_(_csv(v)),
    "priority": lambda v, p: _compare(Item.priority, *_operator(v, p, _int)),
    "created_at": lambda v, p: _compare(Item.created_at, *_operator(v, p, _datetime)),
}


class ItemListing:
    """The items list of the review console, with the orders list's conventions:
    ``filter[state|type|order_id|tenant_id|agent_id|priority|created_at]``, ``sort`` (``-`` for
    descending) and ``page[number]``/``page[size]``; anything unknown is ``InvalidQuery``."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def list(self, params: Iterable[tuple[str, str]], tenant: str | None = None) -> dict[str, Any]:
        """One page; ``tenant`` forced as :meth:`OrderListing.list`'s is."""
        query, sort = ListQuery(), "-updated_at"
        if tenant is not None:
            query.where.append(Item.tenant_id == tenant)
        for param, value in params:
            if param == "sort":
                sort = value
            elif not _page(query, param, value, MAX_SIZE):
                handler = _ITEM_FILTERS.get(_filter_name(param))
                if handler is None:
                    raise _bad(f"unknown query parameter {param!r}", param)
                query.where.append(handler(value, param))
        order_by = _sort(sort, ITEM_SORTS, "-updated_at")
        where = and_(true(), *query.where)
        stmt = select(Item).where(where).order_by(*order_by, Item.id)
        stmt = stmt.limit(query.size).offset((query.number - 1) * query.size)
        with self.ctx.db.transaction() as s:
            rows = [item_dict(i) for i in s.scalars(stmt)]
            total = count_rows(s, Item, where)
        return _paged(query, rows, total)
