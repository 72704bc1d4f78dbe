"""The orders list (SPEC §6.2): filters, sorts and pages, all in one SQL query.

``items_count`` is a correlated subquery, item and provenance filters are ``EXISTS``
clauses (served by ``ix_work_items_order_state`` / ``ix_work_provenance_*``), so a page
costs two statements (rows, total) whatever its size. Anything unknown is ``InvalidQuery``.
The query-string language is :mod:`.params`'; the items list is :mod:`.item_listing`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    cast,
    column,
    exists,
    func,
    not_,
    select,
    true,
)
from sqlalchemy.sql import Select

from ..db.models import Event, Item, Order, Provenance
from ..db.predicates import count_rows, leasable
from ..provenance.default import anonymize_ip
from ..services.context import ServiceContext
from ..services.views import event_dict, item_dict, order_dict
from ..states import ItemState, OrderState
from .expiry import with_live_expiry
from .params import (
    PAGE_NUMBER,
    PAGE_SIZE,
    ListQuery,
    as_bool,
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

DEFAULT_SORT = "-priority,created_at"

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


#: upstream's ``include`` names (camelCase counts too) → ours
INCLUDES = {
    "items": "items",
    "events": "events",
    "itemsCount": "items_count",
    "items_count": "items_count",
    "eventsCount": "events_count",
    "events_count": "events_count",
    "itemsExists": "items_exists",
    "items_exists": "items_exists",
    "eventsExists": "events_exists",
    "events_exists": "events_exists",
}
_FIELDS = re.compile(r"^fields\[([a-z_]+)\]$")
FIELD_KINDS = {"orders": "work_orders"} | {k: k for k in ("work_orders", "items", "events")}


def _items_exist(*conds: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists().where(Item.order_id == Order.id, *conds)


def _provenance_exists(column: Any, values: list[str]) -> ColumnElement[bool]:
    return exists().where(Provenance.order_id == Order.id, column.in_(values))


def _meta(value: str, param: str, ctx: ServiceContext) -> ColumnElement[bool]:
    """``key:value``: the meta key whose value reads ``value`` as text, as PostgreSQL's
    ``->>`` gives it (a string unquoted, ``true``, ``1``). SQLite's ``json_extract``
    answers SQL values instead (``true`` is ``1``): there the JSON type says how the
    value reads, so ``flag:true`` and ``n:1`` find the same orders on both stores. The
    key is matched as ``json_each`` reads it, unescaped: a path missed a key stored
    escaped (``"\\u00fc"`` for ``ü``) or holding a ``"``; a number is read as its JSON
    text (an integer past 2**63 read as a real's)."""
    key, sep, expected = value.partition(":")
    if not sep or not key:
        raise bad(f"{param}: expected key:value", param)
    if ctx.db.is_postgres:
        cond: ColumnElement[bool] = Order.meta[key].as_string() == expected
        return cond
    pair = func.json_each(Order.meta).table_valued(
        column("key", String), column("value", String), column("type", String),
        column("fullkey", String),
    )  # fmt: skip
    number = func.coalesce(
        Order.meta.op("->", return_type=String)(pair.c.fullkey), cast(pair.c.value, String)
    )
    read = case(
        (pair.c.type == "text", pair.c.value),
        (pair.c.type.in_(("true", "false")), pair.c.type),
        (pair.c.type.in_(("integer", "real")), number),
    )
    return exists(select(1).select_from(pair).where(pair.c.key == key, read == expected))


def related(s: Any, data: list[dict[str, Any]], include: set[str]) -> None:
    """Add the included relations (upstream's ``include=items,events,eventsCount``, and
    ``itemsExists``/``eventsExists``: Spatie's ``*_exists`` booleans) to the rows of one
    page, one statement per relation."""
    ids = [uuid.UUID(row["id"]) for row in data]
    _exist(s, data, ids, include)
    if not ids or not include - {"items_count", "items_exists", "events_exists"}:
        return
    if "items" in include:
        items = s.scalars(select(Item).where(Item.order_id.in_(ids)).order_by(Item.created_at))
        _attach(data, "items", ((item.order_id, item_dict(item)) for item in items))
    if "events" in include:
        events = s.scalars(select(Event).where(Event.order_id.in_(ids)).order_by(Event.id))
        _attach(data, "events", ((event.order_id, event_dict(event)) for event in events))
        for row in data:
            row["events_count"] = len(row["events"])
    elif "events_count" in include:  # counted by the database: a busy order's 70k events
        counted = select(Event.order_id, func.count()).where(Event.order_id.in_(ids))
        counts = {oid: n for oid, n in s.execute(counted.group_by(Event.order_id))}  # were
        for row in data:  # read whole, 3 s, for the one number
            row["events_count"] = int(counts.get(uuid.UUID(row["id"]), 0))


def _exist(s: Any, data: list[dict[str, Any]], ids: list[uuid.UUID], include: set[str]) -> None:
    """``items_exists`` (from the count the row has) and ``events_exists`` (one probe)."""
    if "items_exists" in include:
        for row in data:
            row["items_exists"] = row["items_count"] > 0
    if "events_exists" in include and ids:
        some = exists().where(Event.order_id == Order.id)
        having = set(s.scalars(select(Order.id).where(Order.id.in_(ids), some)))
        for row in data:
            row["events_exists"] = uuid.UUID(row["id"]) in having


def _attach(data: list[dict[str, Any]], key: str, pairs: Any) -> None:
    """Each (order id, view) under ``key`` of its order's row."""
    by_id = {row["id"]: row for row in data}
    for row in data:
        row[key] = []
    for order_id, view in pairs:
        by_id[str(order_id)][key].append(view)


@functools.cache
def _fields_of(kind: str) -> frozenset[str]:
    """The keys a row of ``kind`` has: those its view function writes (asked of an empty
    row, so the names live in one place), and the orders list's own (its count and
    included relations)."""
    if kind == "items":
        return frozenset(item_dict(Item()))
    if kind == "events":
        return frozenset(event_dict(Event()))
    return frozenset(order_dict(Order())) | {"items_count", *RELATIONS}


def known_fields(kind: str, names: list[str], param: str) -> list[str]:
    """``fields[kind]``'s names, each a key of that kind of row (else 400: a misspelt name
    would silently empty every row)."""
    unknown = [n for n in names if n not in _fields_of(kind)]
    if unknown:
        known = ", ".join(sorted(_fields_of(kind)))
        raise bad(f"{param}: unknown field(s) {', '.join(unknown)}; one of {known}", param)
    return names


def sparse(row: dict[str, Any], fields: dict[str, list[str]]) -> dict[str, Any]:
    """Upstream's sparse fieldsets: only the named keys of each kind of row (included
    relations keep their key; ``fields[items]`` trims each item)."""
    kept = fields.get("work_orders")
    out = row if kept is None else {k: v for k, v in row.items() if k in kept or k in RELATIONS}
    for kind in ("items", "events"):
        if kind in fields and isinstance(out.get(kind), list):
            out[kind] = [{k: v for k, v in r.items() if k in fields[kind]} for r in out[kind]]
    return out


RELATIONS = ("items", "events", "events_count", "items_exists", "events_exists")


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
        (services/tokens.py), forced beside the query's own filters (a
        ``filter[tenant_id]`` naming another tenant then finds nothing)."""
        query = self.parse(params, size)
        if tenant is not None:
            query.where.append(Order.tenant_id == tenant)
        # the page's orders, then their items counted: in the select list the count ran
        # for every row the offset skipped (2.4 s for page 4000 of 200k orders)
        stmt: Select[Any] = select(Order).where(and_(true(), *query.where))
        stmt = stmt.order_by(*query.order_by, Order.id)
        stmt = stmt.limit(query.size).offset((query.number - 1) * query.size)
        with self.ctx.db.transaction() as s:
            orders = list(s.scalars(stmt))
            total = count_rows(s, Order, *query.where)
            counted = select(Item.order_id, func.count()).where(
                Item.order_id.in_([order.id for order in orders])
            )
            counts = {oid: n for oid, n in s.execute(counted.group_by(Item.order_id))}
            data = [{**order_dict(o), "items_count": int(counts.get(o.id, 0))} for o in orders]
            related(s, data, query.include)
        # included items' held leases: the lock's expiry (reads/expiry.py)
        with_live_expiry(self.ctx, [i for row in data for i in row.get("items", [])])
        return paged(query, [sparse(row, query.fields) for row in data], total)

    def parse(self, params: Iterable[tuple[str, str]], size: int | None = None) -> ListQuery:
        settings = self.ctx.settings
        limit = settings.max_page_size
        query, sort = (
            ListQuery(size=min(size or settings.default_page_size_http, limit)),
            DEFAULT_SORT,
        )
        asked = list(readable(merged(params, REPEATABLE)))
        named = {param for param, _ in asked}
        for param, value in asked:
            if self._absent(param, value, named):
                continue
            if param == "sort":
                sort = value
            elif page(query, param, value, limit):
                continue
            elif param == "include":
                for name in csv(value):
                    if name not in INCLUDES:
                        raise bad(f"unknown include {name!r}; one of {', '.join(INCLUDES)}", param)
                    query.include.add(INCLUDES[name])
            elif (fields := _FIELDS.match(param)) is not None:
                kind = FIELD_KINDS.get(fields.group(1))
                if kind is None:
                    raise bad(f"{param}: one of fields[work_orders|items|events]", param)
                query.fields[kind] = known_fields(kind, csv(value), param)
            else:
                query.where.append(self._filter(param, value))
        query.order_by = sort_by(sort, SORTS, DEFAULT_SORT)
        return query

    def _absent(self, param: str, value: str, named: set[str]) -> bool:
        """Whether ``param`` is read as absent: a bare filter beside its ``filter[...]``
        (which wins, as upstream's API reads them), or one sent empty (as upstream reads
        it; an unknown name is still refused)."""
        if param in BARE_FILTERS and f"filter[{param}]" in named:
            return True
        if value != "":
            return False
        if param not in ("sort", "include", *PAGE_SIZE, *PAGE_NUMBER) and not _FIELDS.match(param):
            self._handler(param)
        return True

    def _filter(self, param: str, value: str) -> ColumnElement[bool]:
        return self._handler(param)(value, param, self.ctx)

    def _handler(self, param: str) -> _Handler:
        handler = _FILTERS.get(filter_name(param, BARE_FILTERS))
        if handler is None:
            known = ", ".join(f"filter[{name}]" for name in sorted(_FILTERS))
            raise bad(
                f"unknown query parameter {param!r}; the filters are {known}, and sort,"
                " include, fields[…], page[number], page[size]",
                param,
            )
        return handler


#: Order filters also taken bare (``?requested_by_type=agent``), as upstream's API
#: normalises them into ``filter[...]``.
BARE_FILTERS = ("state", "type", "id", "requested_by_type", "requested_by_id")


def _has_available(value: str, param: str, ctx: ServiceContext) -> ColumnElement[bool]:
    cond = _items_exist(leasable(ctx.clock()))
    return cond if as_bool(value, param) else not_(cond)


_Handler = Callable[[str, str, ServiceContext], ColumnElement[bool]]


def _at(column: Any) -> _Handler:
    return lambda v, p, _: compare(column, *operator_of(v, p, as_datetime))


#: The filters whose conditions each hold when given twice (params.merged): the
#: comparisons (a range), ``meta`` (every pair), ``has_available_items``, and those over
#: an order's items and provenance (``agent_id=a&agent_id=b``: worked on by both).
REPEATABLE = (
    "priority",
    "created_at",
    "last_transitioned_at",
    "applied_at",
    "completed_at",
    "meta",
    "has_available_items",
    "items.state",
    "agent_id",
    "model_name",
    "ip_address",
)

_FILTERS: dict[str, _Handler] = {
    "state": lambda v, p, _: Order.state.in_(states(v, p, (s.value for s in OrderState))),
    "type": lambda v, p, _: Order.type.in_(csv(v)),
    "id": lambda v, p, _: Order.id.in_(uuids(v, p)),
    "requested_by_id": lambda v, p, _: Order.requested_by_id.in_(csv(v)),
    "tenant_id": lambda v, p, _: Order.tenant_id.in_(csv(v)),
    "priority": lambda v, p, _: compare(Order.priority, *operator_of(v, p, as_int)),
    "requested_by_type": lambda v, p, _: Order.requested_by_type.in_(csv(v)),
    "created_at": _at(Order.created_at),
    "last_transitioned_at": _at(Order.last_transitioned_at),
    "applied_at": _at(Order.applied_at),
    "completed_at": _at(Order.completed_at),
    "items.state": lambda v, p, _: _items_exist(
        Item.state.in_(states(v, p, (s.value for s in ItemState)))
    ),
    "meta": _meta,
    "has_available_items": _has_available,
    "agent_id": lambda v, p, _: _provenance_exists(Provenance.agent_id, csv(v)),
    "model_name": lambda v, p, _: _provenance_exists(Provenance.model_name, csv(v)),
    "ip_address": lambda v, p, ctx: _provenance_exists(Provenance.ip_address, _ips(v, ctx)),
}


def _ips(value: str, ctx: ServiceContext) -> list[str]:
    """Addresses as the default enricher stores them: in canonical form, and anonymised
    when the setting is on (so a full address finds its anonymised rows)."""
    out = []
    for raw in csv(value):
        try:
            ip = str(ipaddress.ip_address(raw))
        except ValueError:
            out.append(raw)  # not an address: matches whatever was stored as is
            continue
        if ctx.settings.provenance_anonymize_ip:
            ip = anonymize_ip(ip) or ip
        out.append(ip)
    return out
