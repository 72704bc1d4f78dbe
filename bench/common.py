"""What every bench module shares: configuration, timing, the scratch database, seeding."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from workmanager import ApplyContext, Diff, ItemSpec, OrderType
from workmanager.types import OrderView

REPO_ROOT = Path(__file__).resolve().parent.parent
ORDER_TYPE = "bench.noop"
AGENT = "bench-agent-1"
RESULT = {"answer": "42"}

Figures = dict[str, float]


@dataclass(frozen=True)
class Config:
    """Where the bench runs. Everything it creates is its own and is dropped at the end."""

    pg_host_url: str = os.environ.get(
        "WM_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"
    )
    pg_admin_dsn: str = os.environ.get(
        "WM_BENCH_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    )
    pg_db: str = os.environ.get("WM_BENCH_PG_DB", "wm_bench")
    peer_db: str = os.environ.get("WM_BENCH_PEER_DB", "wm_bench_procrastinate")
    redis_url: str = os.environ.get("WM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    redis_prefix: str = "wmbench:"

    @property
    def db_url(self) -> str:
        """SQLAlchemy URL of the bench database (what WorkManager gets)."""
        return f"{self.pg_host_url}/{self.pg_db}"

    def dsn(self, dbname: str | None = None) -> str:
        """libpq DSN of the bench database (or another one on the same server)."""
        return psycopg.conninfo.make_conninfo(self.pg_admin_dsn, dbname=dbname or self.pg_db)


def measure(fn: Callable[[int], Any], n: int) -> Figures:
    """Call ``fn(i)`` n times: throughput over the wall clock, p50/p99 of each call.

    The floors (``floor.py``) are measured with it too, so ratios to the floor compare
    like with like.
    """
    lat = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return figures(lat, wall)


def figures(lat: list[float], wall: float) -> Figures:
    """Throughput (``len(lat)`` calls over ``wall`` seconds) and p50/p99 of ``lat``."""
    lat = sorted(lat)
    n = len(lat)
    return {
        "ops_per_s": n / wall,
        "p50_ms": lat[n // 2] * 1e3,
        "p99_ms": lat[min(int(n * 0.99), n - 1)] * 1e3,
        "n": n,
    }


def measure_pair(
    ours: Callable[[int], Any], floor: Callable[[int], Any], n: int, chunks: int = 10
) -> tuple[Figures, Figures]:
    """``measure`` of ours and of its floor, n calls each, in alternating chunks.

    On a shared machine the load of other processes then falls on both sides of the
    ratio. Throughput is over the summed wall time of each side's chunks.
    """
    lat: tuple[list[float], list[float]] = ([], [])
    wall = [0.0, 0.0]
    size = max(n // chunks, 1)
    for lo in range(0, n, size):
        for side, fn in enumerate((floor, ours)):
            start = time.perf_counter()
            for i in range(lo, min(lo + size, n)):
                t = time.perf_counter()
                fn(i)
                lat[side].append(time.perf_counter() - t)
            wall[side] += time.perf_counter() - start
    return figures(lat[1], wall[1]), figures(lat[0], wall[0])


def median_of(rounds: list[dict[str, Figures]]) -> dict[str, Figures]:
    """Per figure, the round with the median throughput (its latencies come with it).

    Rounds of the floor and of ours alternate, so load from other processes on a shared
    machine falls on both sides of a ratio rather than on one.
    """
    out = {}
    for name in rounds[0]:
        ranked = sorted((r[name] for r in rounds), key=lambda f: f["ops_per_s"])
        out[name] = {**ranked[len(ranked) // 2], "rounds": len(ranked)}
    return out


def create_database(cfg: Config, name: str) -> None:
    with psycopg.connect(cfg.pg_admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(cfg: Config, name: str) -> None:
    with psycopg.connect(cfg.pg_admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


TABLES = (
    "work_api_tokens, work_idempotency_keys, work_provenance, work_events,"
    " work_item_parts, work_items, work_orders"
)

SEED_ORDERS = """
INSERT INTO work_orders (id, type, state, priority, payload, meta, requested_by_type,
                         apply_attempts, created_at, updated_at, last_transitioned_at)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, %(type)s, 'queued',
       (g * 7919) %% 10, jsonb_build_object('n', g), '{}'::jsonb, 'system', 0,
       %(base)s::timestamptz + g * interval '1 millisecond',
       %(base)s::timestamptz + g * interval '1 millisecond',
       %(base)s::timestamptz + g * interval '1 millisecond'
  FROM generate_series(1, %(orders)s) AS g
"""

SEED_ITEMS = """
INSERT INTO work_items (id, order_id, type, order_type, priority, state, input, attempts,
                        max_attempts, lease_token, created_at, updated_at)
SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(g), 12, '0'))::uuid,
       ('00000000-0000-4000-8000-' || lpad(to_hex(o), 12, '0'))::uuid,
       %(type)s, %(type)s, (o * 7919) %% 10, 'queued', jsonb_build_object('n', g), 0, 3, 0,
       %(base)s::timestamptz + o * interval '1 millisecond'
         + (g %% %(per)s) * interval '1 microsecond',
       %(base)s::timestamptz + o * interval '1 millisecond'
  FROM (SELECT g, (g - 1) / %(per)s + 1 AS o FROM generate_series(1, %(items)s) AS g) AS s
"""


def seed(cfg: Config, items: int, per_order: int = 10) -> float:
    """Empty the tables and queue ``items`` valid items (``per_order`` per order) in SQL.

    Orders are ``queued`` with priorities 0-9; items copy their order's priority and type,
    as planning does. The bench's Redis keys go too (item ids repeat from seed to seed).
    Returns the seconds it took (insert + VACUUM ANALYZE).
    """
    clear_redis(cfg)
    orders = (items + per_order - 1) // per_order
    params = {"type": ORDER_TYPE, "orders": orders, "items": items, "per": per_order}
    start = time.perf_counter()
    with psycopg.connect(cfg.dsn(), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        base = conn.execute("SELECT now() - interval '30 days'").fetchone()[0]  # type: ignore[index]
        params["base"] = base
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute(SEED_ORDERS, params)
            conn.execute(SEED_ITEMS, params)
        conn.execute("VACUUM ANALYZE work_orders")
        conn.execute("VACUUM ANALYZE work_items")
    return time.perf_counter() - start


def bench_registry() -> Any:
    """A registry with the one bench order type: a small result schema, a pure apply."""
    from workmanager import Diff, OrderType, Registry
    from workmanager.types import JSON, ItemView

    class BenchOrder(OrderType):
        type = ORDER_TYPE

        def result_schema(self, item: ItemView) -> JSON:
            # a submit's answer is a text; a finalize's, assembled from the part
            # ``answer``, that part's object (an item of no parts meets this schema then)
            return {
                "type": "object",
                "required": ["answer"],
                "properties": {"answer": {"type": ["string", "object"]}},
            }

        def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
            return Diff(before={}, after={}, summary="bench")

    return Registry([BenchOrder()])


def make_wm(cfg: Config, backend: str) -> Any:
    """A WorkManager on the bench database with the given lease backend (as deployed)."""
    from workmanager import Settings, WorkManager

    settings = Settings(
        database_url=cfg.db_url,
        lease_backend=backend,
        redis_url=cfg.redis_url,
        redis_prefix=f"{cfg.redis_prefix}wm:",  # under cfg's prefix, so clear_redis clears it
        metrics_driver="null",
    )
    return WorkManager(settings, registry=bench_registry())


def create_schema(cfg: Config) -> None:
    """The production schema: the package's migrations, as ``workmanager db upgrade`` does."""
    from workmanager.db.migrate import upgrade
    from workmanager.db.session import Database

    db = Database(cfg.db_url)
    try:
        upgrade(db)
    finally:
        db.dispose()


def clear_redis(cfg: Config) -> None:
    """Delete every key under the bench prefix."""
    import redis

    client = redis.Redis.from_url(cfg.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{cfg.redis_prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


# --- what the admin benches (admin.py, lease_admin.py) share --------------------------
_NOT_COUNTED = ("BEGIN", "COMMIT", "ROLLBACK")


class Pair(OrderType):
    """Orders of two items."""

    type = "bench.pair"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        return [ItemSpec(input={"i": i}) for i in range(2)]

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff(before={}, after={}, summary="nothing")


class Statements:
    """Counts psycopg ``execute`` and ``executemany`` calls while installed."""

    def __init__(self) -> None:
        self.n = 0
        self.saved = {name: getattr(psycopg.Cursor, name) for name in ("execute", "executemany")}

    def __enter__(self) -> Statements:
        for name, saved in self.saved.items():
            setattr(psycopg.Cursor, name, self._counted(saved))
        return self

    def _counted(self, saved: Callable[..., Any]) -> Callable[..., Any]:
        def counted(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            text = query if isinstance(query, str) else str(getattr(query, "_obj", query))
            if not text.lstrip()[:8].upper().startswith(_NOT_COUNTED):
                self.n += 1
            return saved(cur, query, *args, **kwargs)

        return counted

    def __exit__(self, *exc: object) -> None:
        for name, saved in self.saved.items():
            setattr(psycopg.Cursor, name, saved)
