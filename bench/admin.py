"""The control plane's admin changes on PostgreSQL: latency and statements per call.

    python -m bench.admin [--orders 200] [--json var/bench_admin.json]

For each admin change (approve by hand, reject, requeue of a rejected order, reject with
rework, retry of a failed order, a failed apply attempt recorded, dead-lettering), N
orders of two items are brought to the state it takes, then the change is called once per
order from one thread (dead-lettering: once, over all N). Reported per change: the median
and mean milliseconds per call and the PostgreSQL statements per call (every ``execute``
or ``executemany`` that reaches psycopg in this process; ``BEGIN``, ``COMMIT`` and
``ROLLBACK`` left out).
Only the public API is used, so the same file measures an older tree:
``PYTHONPATH=<old tree>:<this repository> python -m bench.admin``. Uses its own database
(``wm_bench_admin``), dropped at the end. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg

from bench.common import Pair, Statements
from workmanager import Registry, Settings, WorkManager
from workmanager.db.session import Database
from workmanager.services.admin import OrderAdmin
from workmanager.types import Actor

ADMIN_DSN = os.environ.get("WM_BENCH_PG_ADMIN", "host=127.0.0.1 user=postgres dbname=postgres")
HOST_URL = os.environ.get("WM_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
DB = "wm_bench_admin"
REVIEWER = Actor("user", "bench")
REASONS = [{"code": "wrong", "message": "the answer is wrong"}]


def submitted(wm: WorkManager) -> uuid.UUID:
    order_id = wm.propose("bench.pair", {})
    while (lease := wm.agent.checkout("bench-agent", order_id=order_id)) is not None:
        wm.agent.submit(lease, {"ok": True})
    return order_id


def failed(wm: WorkManager) -> uuid.UUID:
    order_id = wm.propose("bench.pair", {})
    lease = wm.agent.checkout("bench-agent", order_id=order_id)
    assert lease is not None
    wm.agent.fail(lease, {"code": "broken", "message": "no"}, retryable=False)
    return order_id


def measure(calls: list[Callable[[], Any]]) -> dict[str, float]:
    times = []
    with Statements() as counted:
        for call in calls:
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1000)
    return {
        "calls": len(calls),
        "median_ms": round(statistics.median(times), 3),
        "mean_ms": round(statistics.fmean(times), 3),
        "statements_per_call": round(counted.n / len(calls), 2),
    }


def run(n: int) -> dict[str, dict[str, float]]:
    settings = Settings(
        database_url=f"{HOST_URL}/{DB}",
        lease_backend="database",
        metrics_driver="null",
        apply_max_retries=1000,
        dead_letter_after_hours=0,
    )
    wm = WorkManager(settings, registry=Registry([Pair()]))
    admin = OrderAdmin(wm.ctx, wm.orders)
    out: dict[str, dict[str, float]] = {}
    ids = [submitted(wm) for _ in range(n)]
    out["approve"] = measure([partial(wm.orders.approve, o, REVIEWER) for o in ids])
    ids = [submitted(wm) for _ in range(n)]
    out["reject"] = measure([partial(wm.orders.reject, o, REASONS, REVIEWER) for o in ids])
    out["requeue (rework)"] = measure([partial(admin.requeue, o, REVIEWER) for o in ids])
    ids = [submitted(wm) for _ in range(n)]
    out["reject with rework"] = measure(
        [partial(wm.orders.reject, o, REASONS, REVIEWER, allow_rework=True) for o in ids]
    )
    ids = [failed(wm) for _ in range(n)]
    out["retry"] = measure([partial(wm.orders.retry, o, REVIEWER) for o in ids])
    claims = []
    for _ in range(n):
        order_id = submitted(wm)
        wm.approve(order_id)
        claim = uuid.uuid4().hex
        wm.executor.store.start_apply(order_id, claim, wm.ctx.clock())
        claims.append((order_id, claim))
    boom = RuntimeError("downstream down")
    out["apply failure"] = measure(
        [partial(wm.executor.record_failure, o, boom, 1, c) for o, c in claims]
    )
    for _ in range(n):
        failed(wm)
    only = {"check_stale": False, "purge_keys": False, "recover_applies": False}
    out[f"dead-letter ({n} orders)"] = measure([partial(wm.maintenance.run, **only)])
    wm.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--json")
    args = parser.parse_args()
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    try:
        Database(f"{HOST_URL}/{DB}").create_all()
        results = run(args.orders)
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    width = max(len(k) for k in results)
    for name, row in results.items():
        print(
            f"{name:<{width}}  median {row['median_ms']:7.3f} ms  mean {row['mean_ms']:7.3f} ms"
            f"  statements/call {row['statements_per_call']:6.2f}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
