"""The orders-list scenarios upstream tests twice, over HTTP (Feature/Http/
OrdersIndexQueryBuilderTest) and MCP ``work.list`` (Feature/Mcp/WorkListQueryBuilderTest):
one data set, made the way upstream's tests make theirs (proposed in-process like
``$allocator->propose``, then states, ages, ``meta`` and ``requested_by_type`` written to
the table like ``WorkOrder::create([...])``), and one list of queries with the orders each
must return. test_http_orders_index.py and test_mcp_lists.py replay them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tests.api import server_types
from tests.compat.seeding import Seeder
from workmanager import Registry, Settings, WorkManager
from workmanager.dispatch import NullDispatcher

DAY, MINUTE, SECOND = timedelta(days=1), timedelta(minutes=1), timedelta(seconds=1)

#: key: (type, payload, priority, age, order state, item state, requested_by_type)
ROWS: dict[str, tuple[str, dict[str, Any], int, timedelta, str, str, str]] = {
    "batch3": ("test.multi", {"count": 3}, 80, 10 * DAY, "queued", "queued", "system"),
    "busy": ("test.simple", {"name": "busy"}, 70, DAY, "in_progress", "in_progress", "system"),
    "match": ("test.simple", {"name": "match"}, 60, 2 * DAY, "queued", "queued", "system"),
    "batch1": ("test.multi", {"count": 1}, 40, 3 * DAY, "queued", "leased", "system"),
    "high": ("test.simple", {"name": "high"}, 10, 5 * MINUTE, "queued", "queued", "agent"),
    "old_low": ("test.simple", {"name": "old"}, 5, 10 * MINUTE, "queued", "queued", "user"),
    "new_low": ("test.simple", {"name": "new"}, 5, SECOND, "queued", "queued", "system"),
}
META = {"old_low": {"batch_id": 42}, "new_low": {"batch_id": 99}}
#: The default sort: priority descending, then oldest first.
DEFAULT_ORDER = ["batch3", "busy", "match", "batch1", "high", "old_low", "new_low"]


def in_process(db_url: str) -> WorkManager:
    registry = Registry()
    server_types.register(registry)
    settings = Settings(database_url=db_url, metrics_driver="null")
    return WorkManager(settings, registry=registry, dispatcher=NullDispatcher())


def seed_rows(db_url: str) -> dict[str, str]:
    """An empty queue, then :data:`ROWS`; returns key -> order id."""
    seeder = Seeder(db_url)
    seeder.reset()
    wm = in_process(db_url)
    ids: dict[str, str] = {}
    try:
        for key, (type, payload, priority, age, state, item_state, by) in ROWS.items():
            order_id = str(wm.propose(type, payload, priority=priority, meta=META.get(key)))
            seeder.adjust(
                order_id, age=age, state=state, item_state=item_state, requested_by_type=by
            )
            ids[key] = order_id
    finally:
        wm.close()
        seeder.close()
    return ids


def seed_many(db_url: str, n: int) -> None:
    """An empty queue, then ``n`` orders (upstream's pagination tests)."""
    Seeder(db_url).reset()
    wm = in_process(db_url)
    try:
        for i in range(n):
            wm.propose("test.simple", {"name": f"test-{i}"}, priority=1)
    finally:
        wm.close()


Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Case:
    """``query`` (``filter``, ``sort``, ``include``, ``fields``, ``page``) must return
    exactly the orders ``keys`` (in that order when ``ordered``), and pass ``check``."""

    scenario: str
    query: dict[str, Any]
    keys: list[str]
    ordered: bool = False
    check: Callable[[Rows], bool] | None = None


def everything_but(*keys: str) -> list[str]:
    return [k for k in DEFAULT_ORDER if k not in keys]


CASES = [
    Case("preserves default behaviour ... default sort", {}, DEFAULT_ORDER, ordered=True),
    Case(
        "filters with exact state filter", {"filter": {"state": "queued"}}, everything_but("busy")
    ),
    Case(
        "filters with exact type filter",
        {"filter": {"type": "test.multi"}},
        ["batch3", "batch1"],
        check=lambda rows: {r["type"] for r in rows} == {"test.multi"},
    ),
    Case(
        "filters with exact requested_by_type filter",
        {"filter": {"requested_by_type": "agent"}},
        ["high"],
    ),
    Case("... requested_by_type (user)", {"filter": {"requested_by_type": "user"}}, ["old_low"]),
    Case(
        "filters with relation filter items.state",
        {"filter": {"items.state": "queued"}},
        everything_but("busy", "batch1"),
    ),
    Case(
        "filters with operator filter priority greater than",
        {"filter": {"priority": ">50"}},
        ["batch3", "busy", "match"],
        check=lambda rows: all(r["priority"] > 50 for r in rows),
    ),
    Case(
        "filters with operator filter created_at >=",
        {"filter": {"created_at": "AGO5"}},
        everything_but("batch3"),
    ),
    Case(
        "filters with JSON meta filter using string notation",
        {"filter": {"meta": "batch_id:42"}},
        ["old_low"],
        check=lambda rows: rows[0]["meta"] == {"batch_id": 42},
    ),
    Case(
        "filters with has_available_items callback",
        {"filter": {"has_available_items": "true"}},
        everything_but("busy", "batch1"),
    ),
    Case(
        "supports include with itemsCount",
        {"filter": {"id": "batch3"}, "include": "itemsCount"},
        ["batch3"],
        check=lambda rows: rows[0]["items_count"] == 3,
    ),
    Case(
        "supports include with events",
        {"include": "events"},
        DEFAULT_ORDER,
        ordered=True,
        check=lambda rows: all(r["events"] for r in rows),
    ),
    Case(
        "supports field selection for work_orders",
        {"fields": {"work_orders": "id,type,state,priority"}},
        DEFAULT_ORDER,
        ordered=True,
        check=lambda rows: all(set(r) == {"id", "type", "state", "priority"} for r in rows),
    ),
    Case(
        "supports custom sorting by priority ascending",
        {"sort": "priority"},
        DEFAULT_ORDER,
        check=lambda rows: [r["priority"] for r in rows] == [5, 5, 10, 40, 60, 70, 80],
    ),
    Case(
        "supports custom sorting by created_at descending",
        {"filter": {"id": "old_low,new_low"}, "sort": "-created_at"},
        ["new_low", "old_low"],
        ordered=True,
    ),
    Case(
        "supports sorting by items_count",
        {"filter": {"id": "batch1,batch3"}, "sort": "-items_count", "include": "itemsCount"},
        ["batch3", "batch1"],
        ordered=True,
        check=lambda rows: [r["items_count"] for r in rows] == [3, 1],
    ),
    Case(
        "combines multiple filters and sorts",
        {
            "filter": {"state": "queued", "type": "test.simple", "priority": ">50"},
            "sort": "-created_at",
            "include": "itemsCount",
        },
        ["match"],
        check=lambda rows: rows[0]["payload"] == {"name": "match"} and rows[0]["priority"] == 60,
    ),
    Case(
        "combines multiple filter criteria",
        {"filter": {"state": "queued", "priority": ">50"}},
        ["batch3", "match"],
    ),
]

#: Refused queries (HTTP: 400 ``invalid_query``): an unknown filter, sort, include and
#: sparse field (which answered rows emptied of every key).
INVALID: list[dict[str, Any]] = [
    {"filter": {"invalid_field": "value"}},
    {"sort": "invalid_field"},
    {"include": "invalid_relation"},
    {"fields": {"work_orders": "no_such_field"}},
    {"fields": {"items": "id,no_such_field"}},
]


def resolve(query: dict[str, Any], ids: dict[str, str], now_minus_5_days: str) -> dict[str, Any]:
    """The case's query with order keys turned into ids, and ``AGO5`` into ``>=<date>``."""
    out = dict(query)
    if "filter" in query:
        filters = dict(query["filter"])
        if "id" in filters:
            filters["id"] = ",".join(ids[k] for k in filters["id"].split(","))
        if filters.get("created_at") == "AGO5":
            filters["created_at"] = ">=" + now_minus_5_days
        out["filter"] = filters
    return out


def http_params(query: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for group in ("filter", "fields", "page"):
        for key, value in query.get(group, {}).items():
            params[f"{group}[{key}]"] = value
    for key in ("sort", "include"):
        if key in query:
            params[key] = query[key]
    return params


def keys_of(rows: Rows, ids: dict[str, str]) -> list[str]:
    by_id = {v: k for k, v in ids.items()}
    return [by_id[r["id"]] for r in rows]


def verify(case: Case, rows: Rows, ids: dict[str, str]) -> None:
    got = keys_of(rows, ids)
    if case.ordered:
        assert got == case.keys, (case.scenario, got)
    else:
        assert sorted(got) == sorted(case.keys), (case.scenario, got)
    assert case.check is None or case.check(rows), (case.scenario, rows)
