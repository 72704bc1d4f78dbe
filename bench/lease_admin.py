"""The operator's lease actions and the sweep on PostgreSQL: time and statements per lease.

    python -m bench.lease_admin [--leases 1000] [--batch 100] [--json var/bench_lease_admin.json]

Per lease backend (``database``, ``redis``): N leases held by real checkouts, then
``leases reclaim --all``, ``leases release --all`` and ``leases extend --all --seconds
60`` (:class:`LeaseAdmin`), and the sweep of N expired leases (the clock moved past
their expiry; with Redis, their locks deleted as a TTL would), each over the N leases in
batches of ``--batch``. Reported per action: milliseconds for all N, microseconds per
lease, and the PostgreSQL statements per lease (every ``execute`` or ``executemany``
that reaches psycopg in this process; ``BEGIN``, ``COMMIT`` and ``ROLLBACK`` left out).
Only the public API is used, so the same file measures an older tree:
``PYTHONPATH=<old tree>:<this repository> python -m bench.lease_admin``. Uses its own database
(``wm_bench_lease_admin``) and Redis prefix, dropped at the end. Asserts only that every
action touched every lease.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg

from bench.common import Pair, Statements
from workmanager import Registry, Settings, WorkManager
from workmanager.db.models import utcnow
from workmanager.db.session import Database
from workmanager.reads.leases import LeaseSelector
from workmanager.services.lease_admin import LeaseAdmin

ADMIN_DSN = os.environ.get("WM_BENCH_PG_ADMIN", "host=127.0.0.1 user=postgres dbname=postgres")
HOST_URL = os.environ.get("WM_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
DB = "wm_bench_lease_admin"
REDIS = os.environ.get("WM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def hold(wm: WorkManager, n: int) -> None:
    """``n`` leases held: new ones (``n`` items proposed), or, with 0, every queued item
    leased again."""
    for _ in range(n // 2):
        wm.propose("bench.pair", {})
    while wm.agent.checkout("bench-agent") is not None:
        pass


def measure(call: Callable[[], int], n: int) -> dict[str, float]:
    with Statements() as counted:
        t0 = time.perf_counter()
        touched = call()
        elapsed = time.perf_counter() - t0
    assert touched == n, (touched, n)
    return {
        "leases": n,
        "total_ms": round(elapsed * 1000, 1),
        "us_per_lease": round(elapsed * 1e6 / n, 1),
        "statements_per_lease": round(counted.n / n, 3),
    }


def run(backend: str, n: int, batch: int) -> dict[str, dict[str, float]]:
    prefix = f"wmbench:{uuid.uuid4().hex[:8]}:"
    settings = Settings(
        database_url=f"{HOST_URL}/{DB}",
        lease_backend=backend,
        redis_url=REDIS,
        redis_prefix=prefix,
        metrics_driver="null",
        lease_ttl_seconds=600,
        sweep_batch_size=batch,
        retry_backoff_seconds=0,
        retry_jitter_seconds=0,
        default_max_attempts=1000,
    )
    wm = WorkManager(settings, registry=Registry([Pair()]))
    admin = LeaseAdmin(wm.ctx)
    every = LeaseSelector(all=True)
    out: dict[str, dict[str, float]] = {}
    hold(wm, n)
    out["extend --all"] = measure(lambda: len(admin.extend(every, 60).changes), n)
    out["reclaim --all"] = measure(lambda: len(admin.reclaim(every).changes), n)
    hold(wm, 0)  # the reclaimed items, leased again
    out["release --all"] = measure(lambda: len(admin.release(every).changes), n)
    hold(wm, 0)
    if backend == "redis":  # the locks time out (their keys deleted), the marker stays
        import redis

        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(match=f"{prefix}item:*", count=1000))
        client.delete(*keys)
    wm.ctx.clock = lambda: utcnow() + timedelta(seconds=601)
    sweep = wm.sweeper.sweep
    out["sweep (expired)"] = measure(lambda: sweep(max_batches=n // batch + 1).reclaimed, n)
    wm.close()
    if backend == "redis":
        leftover = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if leftover:
            client.delete(*leftover)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--backends", default="database,redis")
    parser.add_argument("--json")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for backend in args.backends.split(","):
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DB}"')
        try:
            Database(f"{HOST_URL}/{DB}").create_all()
            results[backend] = run(backend, args.leases, args.batch)
        finally:
            with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    for backend, rows in results.items():
        for name, row in rows.items():
            print(
                f"{backend:<8} {name:<16} {row['total_ms']:9.1f} ms  "
                f"{row['us_per_lease']:8.1f} us/lease  "
                f"statements/lease {row['statements_per_lease']:6.3f}"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
