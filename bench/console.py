"""Review console figures: server time of its pages with 10,000 orders in the database.

    python -m bench.console [--orders 10000] [--requests 50] [--db postgres|sqlite]

Fills its own database (PostgreSQL ``wm_bench_console``, dropped at the end, or a SQLite
file in a temporary directory) with ``--orders`` orders of a realistic mix — a third
waiting for review, most of the rest completed, some queued, held or failed — each with
two items, their events and their agents' provenance rows, spread over the last two
hours. Then signs in once and renders the review queue, the dashboard, an order page, the
orders and items lists (filtered and sorted) and an item page ``--requests`` times each
through the app in process (no network: the server's own time, from the request to the
last byte of HTML). Prints p50/p99 per page against the 200 ms the
contract asks for. A benchmark: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from .common import Config, create_database, create_schema, drop_database, figures

DB_NAME = "wm_bench_console"
ORDER_TYPE = "bench.review"
BUDGET_MS = 200.0
MODELS = ("gpt-bench", "claude-bench", "llama-bench")
#: (order state, item state, share of the orders)
MIX = (
    ("submitted", "submitted", 0.33),
    ("completed", "completed", 0.50),
    ("queued", "queued", 0.07),
    ("in_progress", "leased", 0.05),
    ("failed", "submitted", 0.05),
)


def registry() -> Any:
    from workmanager import ApplyContext, Diff, OrderType, OrderView, Registry

    class Review(OrderType):
        type = ORDER_TYPE

        def preview(self, order: OrderView) -> Diff:
            return Diff({"n": None}, {"n": order.payload.get("n")}, "would set n")

        def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
            return Diff({"n": None}, {"n": order.payload.get("n")}, "set n")

    return Registry([Review()])


def _states(n: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for order_state, item_state, share in MIX:
        out += [(order_state, item_state)] * round(n * share)
    out = (out + [("submitted", "submitted")] * n)[:n]
    random.Random(7).shuffle(out)
    return out


def seed(wm: Any, n: int) -> float:
    """Insert ``n`` orders with two items each, their events and provenance (Core bulk
    inserts, so it runs on SQLite and PostgreSQL alike). Returns the seconds it took."""
    from workmanager.db.models import EVENTS_TABLE, PROVENANCE_TABLE, Item, Order

    start = time.perf_counter()
    now = datetime.now(UTC)
    orders, items, events, provenance = [], [], [], []
    for i, (order_state, item_state) in enumerate(_states(n)):
        oid = uuid.uuid4()
        created = now - timedelta(seconds=7200 * (n - i) / n)
        done = created + timedelta(seconds=20)
        orders.append(
            {
                "id": oid,
                "type": ORDER_TYPE,
                "state": order_state,
                "priority": i % 10,
                "payload": {"n": i},
                "meta": {},
                "requested_by_type": "system",
                "apply_attempts": 1 if order_state in ("completed", "failed") else 0,
                "diff": {"before": {"n": None}, "after": {"n": i}, "summary": "set n"}
                if order_state == "completed"
                else None,
                "created_at": created,
                "updated_at": done,
                "last_transitioned_at": done,
                "submitted_at": created + timedelta(seconds=10)
                if order_state in ("submitted", "completed", "failed")
                else None,
            }
        )
        events += [
            _event(oid, None, "proposed", created, {"type": ORDER_TYPE}),
            _event(oid, None, "planned", created, {"item_count": 2}),
        ]
        for k in range(2):
            iid = uuid.uuid4()
            agent = f"agent-{(i + k) % 12}"
            model = MODELS[(i + k) % len(MODELS)]
            held = item_state == "leased"
            items.append(
                {
                    "id": iid,
                    "order_id": oid,
                    "type": ORDER_TYPE,
                    "order_type": ORDER_TYPE,
                    "priority": i % 10,
                    "state": item_state,
                    "input": {"n": i, "k": k},
                    "result": {"answer": f"{i}-{k}"} if item_state != "queued" else None,
                    "attempts": 0 if item_state == "queued" else 1,
                    "max_attempts": 3,
                    "lease_token": 0 if item_state == "queued" else 1,
                    "leased_by_agent_id": agent if held else None,
                    "lease_expires_at": now + timedelta(seconds=30 + i % 90) if held else None,
                    "created_at": created + timedelta(microseconds=k),
                    "updated_at": done,
                }
            )
            if item_state == "queued":
                continue
            events.append(_event(oid, iid, "leased", created, {"agent_id": agent}))
            provenance.append(_prov(oid, iid, "checkout", agent, model, created))
            if not held:
                payload = {"agent_id": agent, "evidence": {"source": "bench"}, "notes": "ok"}
                events.append(_event(oid, iid, "submitted", done, payload))
                provenance.append(_prov(oid, iid, "submit", agent, model, done))
        if order_state == "completed":
            events.append(_event(oid, None, "applied", done, {"attempt": 1}))
        if order_state == "failed":
            events.append(_event(oid, None, "apply_failed", done, {"attempt": 3}))
    with wm.db.transaction() as s:
        for table, rows in (
            (Order.__table__, orders),
            (Item.__table__, items),
            (EVENTS_TABLE, events),
            (PROVENANCE_TABLE, provenance),
        ):
            for chunk in range(0, len(rows), 5000):
                s.execute(insert(table), rows[chunk : chunk + 5000])
    if wm.db.engine.dialect.name == "postgresql":
        with wm.db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    return time.perf_counter() - start


def _event(oid: Any, iid: Any, name: str, at: datetime, payload: Any) -> dict[str, Any]:
    actor = "agent" if iid is not None else "system"
    return {
        "order_id": oid,
        "item_id": iid,
        "event": name,
        "actor_type": actor,
        "actor_id": payload.get("agent_id") if iid is not None else "system",
        "payload": payload,
        "diff": None,
        "message": None,
        "created_at": at,
    }


def _prov(oid: Any, iid: Any, action: str, agent: str, model: str, at: datetime) -> Any:
    from workmanager.db.models import PROVENANCE_TABLE

    row: dict[str, Any] = dict.fromkeys(c.name for c in PROVENANCE_TABLE.columns if c.name != "id")
    row.update(
        order_id=oid,
        item_id=iid,
        action=action,
        agent_id=agent,
        agent_version="1.0.0",
        model_name=model,
        request_id=uuid.uuid4().hex,
        created_at=at,
    )
    return row


def measure_pages(wm: Any, requests: int) -> dict[str, dict[str, float]]:
    from fastapi.testclient import TestClient

    from workmanager.api import create_app
    from workmanager.services.tokens import TokenService

    token, _ = TokenService(wm.ctx).create(f"bench-{uuid.uuid4().hex[:6]}", "view,approve")
    client = TestClient(create_app(wm))
    login = client.get("/ui/login").text
    csrf = re.search(r'name="csrf" value="([^"]*)"', login)
    assert csrf is not None
    client.post("/ui/login", data={"token": token, "csrf": csrf.group(1)})
    queue = client.get("/ui/queue")
    assert queue.status_code == 200 and "waiting" in queue.text, queue.text[:500]
    first = re.search(r'data-order="([0-9a-f-]{36})"', queue.text)
    assert first is not None
    order_page = client.get(f"/ui/orders/{first.group(1)}").text
    item = re.search(r'data-item="([0-9a-f-]{36})"', order_page)
    assert item is not None
    pages = {
        "review queue": "/ui/queue",
        "dashboard": "/ui/dashboard",
        "order page": f"/ui/orders/{first.group(1)}",
        "orders list": "/ui/orders?filter[state]=submitted&sort=-priority",
        "items list": "/ui/items?filter[state]=leased&sort=lease_expires_at",
        "item page": f"/ui/items/{item.group(1)}",
    }
    out = {}
    for name, path in pages.items():
        client.get(path)  # warm: templates compiled, statements prepared
        lat = []
        start = time.perf_counter()
        for _ in range(requests):
            t = time.perf_counter()
            answer = client.get(path)
            lat.append(time.perf_counter() - t)
            assert answer.status_code == 200, (path, answer.status_code)
        out[name] = figures(lat, time.perf_counter() - start)
    return out


def report(results: dict[str, dict[str, float]], n: int, db: str, seeded: float) -> None:
    print(f"review console, {n} orders ({n * 2} items) on {db}; seeded in {seeded:.1f} s")
    print(f"{'page':<14} {'p50 ms':>8} {'p99 ms':>8}   within {BUDGET_MS:.0f} ms")
    for name, f in results.items():
        p50, p99 = f["p50_ms"], f["p99_ms"]
        verdict = "yes" if p99 <= BUDGET_MS else ("p50 only" if p50 <= BUDGET_MS else "no")
        print(f"{name:<14} {p50:>8.1f} {p99:>8.1f}   {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    from workmanager import Settings, WorkManager

    cfg = Config(pg_db=DB_NAME)
    tmp = tempfile.TemporaryDirectory()
    if args.db == "postgres":
        create_database(cfg, DB_NAME)
        url = cfg.db_url
    else:
        url = f"sqlite:///{tmp.name}/console.db"
    try:
        if args.db == "postgres":
            create_schema(cfg)
        settings = Settings(database_url=url, metrics_driver="null", lease_backend="database")
        wm = WorkManager(settings, registry=registry())
        if args.db == "sqlite":
            wm.db.create_all()
        try:
            seeded = seed(wm, args.orders)
            results = measure_pages(wm, args.requests)
        finally:
            wm.close()
    finally:
        if args.db == "postgres":
            drop_database(cfg, DB_NAME)
        tmp.cleanup()
    report(results, args.orders, args.db, seeded)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
