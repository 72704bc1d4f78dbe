"""What every API request costs besides its operation, on PostgreSQL: microseconds per call.

    python -m bench.request_path [--calls 1000] [--rounds 5]

Token authentication (the lookup alone; with the ``last_used_at`` touch, the clock moved a
minute on each call), and an idempotency key claimed then completed, replayed, and claimed
then abandoned. Reported per call: the median over rounds of the mean µs. Only the public
API is used, so the same file measures an older tree: ``PYTHONPATH=<old tree>:<this tree>
python -m bench.request_path``. Uses its own database (``wm_bench_requests``), dropped at
the end. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.admin import ADMIN_DSN, HOST_URL
from workmanager import Registry, Settings, WorkManager
from workmanager.db.session import Database
from workmanager.services.idempotency import Claim
from workmanager.services.tokens import TokenService

DB = "wm_bench_requests"


def calls(wm: WorkManager) -> dict[str, Callable[[int], Any]]:
    tokens, keys, now = TokenService(wm.ctx), wm.idempotency, [datetime(2030, 1, 1, tzinfo=UTC)]
    wm.ctx.clock = lambda: now[0]
    token, _ = tokens.create("bench", "admin")
    done = [""]

    def touch(_: int) -> None:
        now[0] += timedelta(minutes=1)
        tokens.authenticate(token)

    def claim(i: int, key: str | None = None) -> Claim:
        claimed = keys.begin("propose", "-", "p", key or uuid.uuid4().hex, {"n": i})
        assert isinstance(claimed, Claim)
        return claimed

    def replay(i: int) -> None:
        if i == 0:  # a completed key of its own per round
            done[0] = uuid.uuid4().hex
            keys.complete(claim(0, done[0]), 201, {})
        assert keys.begin("propose", "-", "p", done[0], {"n": 0}).status == 201  # type: ignore[union-attr]

    return {
        "authenticate (lookup)": lambda _: tokens.authenticate(token),
        "authenticate + last_used_at touch": touch,
        "key claimed + completed": lambda i: keys.complete(claim(i), 201, {"n": i}),
        "key replayed": replay,
        "key claimed + abandoned": lambda i: keys.abandon(claim(i)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    url = f"{HOST_URL}/{DB}"
    db = Database(url)
    db.create_all()
    wm = WorkManager(
        Settings(database_url=url, lease_backend="database", metrics_driver="null"),
        registry=Registry(),
        database=db,
    )
    try:
        for name, call in calls(wm).items():
            rounds = []
            for _ in range(args.rounds + 1):  # the first warms up
                t0 = time.perf_counter()
                for i in range(args.calls):
                    call(i)
                rounds.append((time.perf_counter() - t0) / args.calls * 1e6)
            print(f"{name:36s} {statistics.median(rounds[1:]):8.1f} µs")
    finally:
        wm.close()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


if __name__ == "__main__":
    main()
