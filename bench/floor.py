"""The floor: ``shared/bench/baseline.py`` run in this process, and the bare composites.

The baseline is imported by path from ``../shared/bench/baseline.py`` relative to the repo
root (CI checks ``shared/`` out beside the clone). Its figures are the floors of the Redis
primitives and of the database checkout. The composites below use the same bare clients
(one psycopg connection, one redis-py client, the baseline's own Lua and SQL) to give the
floor of each agent-API call, which on the Redis backend is a Lua call plus a transaction.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from types import ModuleType

import psycopg
import redis

from .common import Config, Figures, measure

BASELINE = "shared/bench/baseline.py"

#: Compare-and-delete in the baseline's style (it has none): the floor of a store release.
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0"""

#: The second transaction of a cycle: an owner-checked UPDATE of the leased row.
SUBMIT = """
update bench_items set state = 'submitted', lease_owner = null, lease_expires_at = null
 where id = %s and lease_owner = %s"""
HEARTBEAT = """
update bench_items set lease_expires_at = now() + interval '600 seconds'
 where id = %s and lease_owner = %s"""
TABLE = """
create table bench_items (id bigserial primary key, state text not null,
  priority int not null default 0, lease_owner text, lease_expires_at timestamptz,
  attempts int not null default 0)"""


def load_baseline() -> ModuleType:
    """Import ``../shared/bench/baseline.py`` (relative to the repo root) by path."""
    from .common import REPO_ROOT

    path = (REPO_ROOT.parent / BASELINE).resolve()
    if not path.exists():
        raise SystemExit(f"bench: the floor script is missing: {path} (check out shared/ beside)")
    spec = importlib.util.spec_from_file_location("wm_bench_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _environ(cfg: Config) -> None:
    os.environ["WORK_MANAGER_BENCH_REDIS_URL"] = cfg.redis_url
    os.environ["WORK_MANAGER_BENCH_PG_DSN"] = cfg.dsn()


def baseline_redis(cfg: Config, baseline: ModuleType, n: int) -> dict[str, Figures]:
    """The baseline's Redis figures, plus a bare compare-and-delete in the same style."""
    _environ(cfg)
    figures: dict[str, Figures] = baseline.redis_figures(n)
    r = redis.Redis.from_url(cfg.redis_url)
    try:
        acquire, release = r.register_script(baseline.ACQUIRE), r.register_script(RELEASE)
        keys = [f"{cfg.redis_prefix}rel:{i}" for i in range(n)]
        for key in keys:
            acquire(keys=[key, f"{cfg.redis_prefix}rel:fence"], args=["a", 60])
        figures["redis_lua_release_owner_checked"] = measure(
            lambda i: release(keys=[keys[i]], args=["a"]), n
        )
        r.delete(f"{cfg.redis_prefix}rel:fence")
    finally:
        r.close()
    for f in figures.values():
        f.setdefault("n", n)
    return figures


def baseline_postgres(cfg: Config, baseline: ModuleType, n: int) -> dict[str, Figures]:
    """The baseline's PostgreSQL figure, sized as its ``main`` sizes it (n // 2)."""
    _environ(cfg)
    figures: dict[str, Figures] = baseline.postgres_figures(n // 2)
    for f in figures.values():
        f.setdefault("n", n // 2)
    return figures


class _Bare:
    """One psycopg connection and one redis-py client, as bare as the baseline's."""

    def __init__(self, cfg: Config, baseline: ModuleType, rows: int) -> None:
        self.baseline = baseline
        self.conn = psycopg.connect(cfg.dsn(), autocommit=True)
        self.conn.execute("drop table if exists bench_items")
        self.conn.execute(TABLE)
        self.conn.execute("create index on bench_items (priority desc, id) where state = 'queued'")
        self.conn.execute(
            "insert into bench_items (state, priority) select 'queued', (random()*10)::int"
            " from generate_series(1, %s)",
            (rows,),
        )
        self.conn.execute("analyze bench_items")
        self.conn.autocommit = False
        self.r = redis.Redis.from_url(cfg.redis_url)
        self.prefix = f"{cfg.redis_prefix}bare:"
        self.fence = f"{self.prefix}fence"
        self.acquire = self.r.register_script(baseline.ACQUIRE)
        self.extend = self.r.register_script(baseline.EXTEND)
        self.release = self.r.register_script(RELEASE)

    def checkout_txn(self) -> int:
        with self.conn.transaction():
            row = self.conn.execute(self.baseline.CHECKOUT, ("agent-1",)).fetchone()
        assert row is not None, "the bare queue ran dry"
        return int(row[0])

    def update_txn(self, statement: str, item: int) -> None:
        with self.conn.transaction():
            self.conn.execute(statement, (item, "agent-1"))

    def lua_acquire(self, item: int) -> None:
        self.acquire(keys=[f"{self.prefix}{item}", self.fence], args=["agent-1", 600])

    def lua_extend(self, item: int) -> None:
        self.extend(keys=[f"{self.prefix}{item}"], args=["agent-1", 600])

    def lua_release(self, item: int) -> None:
        self.release(keys=[f"{self.prefix}{item}"], args=["agent-1"])

    def close(self) -> None:
        self.conn.autocommit = True
        self.conn.execute("drop table bench_items")
        self.conn.close()
        self.r.close()


class Bare(_Bare):
    """The floor of each agent-API call, as a callable to pair with ours (``fn(i)``).

    database: the baseline's SKIP LOCKED checkout txn; one owner-checked UPDATE txn
    (heartbeat, release); both (the cycle). redis: the same plus one Lua call each (the
    baseline's acquire and extend, a compare-and-delete for release); the cycle is one
    Lua acquire plus two transactions.
    """

    def __init__(self, cfg: Config, baseline: ModuleType, rows: int) -> None:
        super().__init__(cfg, baseline, rows)
        self.held: dict[str, list[int]] = {"database": [], "redis": []}

    def floor(self, backend: str, op: str) -> Callable[[int], None]:
        held = self.held[backend]
        redis_ = backend == "redis"

        def checkout(_: int) -> None:
            item = self.checkout_txn()
            if redis_:
                self.lua_acquire(item)
            held.append(item)

        def heartbeat(i: int) -> None:
            if redis_:
                self.lua_extend(held[i])
            self.update_txn(HEARTBEAT, held[i])

        def release(i: int) -> None:
            self.update_txn(SUBMIT, held[i])
            if redis_:
                self.lua_release(held[i])

        def cycle(_: int) -> None:
            item = self.checkout_txn()
            if redis_:
                self.lua_acquire(item)
            self.update_txn(SUBMIT, item)

        ops = {"checkout": checkout, "heartbeat": heartbeat, "release": release, "cycle": cycle}
        return ops[op.removesuffix("_first")]
