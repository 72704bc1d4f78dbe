"""The bench's own floors run on the real servers: a few calls of each bare primitive, on
the test database and under a per-test Redis prefix, leaving nothing behind."""

from __future__ import annotations

import uuid

import psycopg
import redis

from bench.common import Config
from bench.floor import Bare, postgres_floor, redis_floor
from tests.conftest import PG_DB


def test_the_floors_measure_and_clean_up(pg_url: str, redis_url: str) -> None:
    cfg = Config(pg_db=PG_DB, redis_url=redis_url, redis_prefix=f"wmtest:{uuid.uuid4().hex}:")
    figures = {**redis_floor(cfg, 30), **postgres_floor(cfg, 30)}
    assert set(figures) == {
        "redis_set_nx_ex",
        "redis_lua_acquire",
        "redis_lua_extend_owner_checked",
        "redis_lua_release_owner_checked",
        "postgres_skip_locked_checkout",
    }
    assert all(f["n"] == 30 and f["ops_per_s"] > 0 for f in figures.values())
    bare = Bare(cfg, 20)
    try:
        for backend in ("database", "redis"):
            for op in ("checkout", "heartbeat", "release", "cycle"):
                for i in range(3):
                    bare.floor(backend, op)(i)
    finally:
        bare.close()
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{cfg.redis_prefix}*")) == []
    finally:
        client.close()
    with psycopg.connect(cfg.dsn()) as conn:
        assert conn.execute("select to_regclass('bench_items')").fetchone() == (None,)
