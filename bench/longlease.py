"""Long leases, the workload LLM agents produce: many agents, each item held for K heartbeats.

    python -m bench.longlease [--quick] [--agents 50] [--heartbeats 10] [--items 600]
                              [--rounds 3] [--sleep-ms 0] [--json var/bench_longlease.json]

N agent threads (default 50) share one ``WorkManager(...).agent`` (in process, on
PostgreSQL) and each repeatedly checks out an item, heartbeats it K times (default 10, no
progress, back to back unless ``--sleep-ms`` puts a sleep before each heartbeat), then
submits a result. Once per lease backend (database, redis), each beside its own floor:
the same workload's bare calls from the same number of threads, on ``--floor-conns``
psycopg connections (default 10, the engine's pool size):

* database: the bare SKIP LOCKED checkout transaction, K owner-checked UPDATE
  transactions (the heartbeats), the owner-checked submit UPDATE transaction;
* redis: the bare Lua acquire (``floor.ACQUIRE``) plus the checkout transaction (a
  grant), K Lua extends and no SQL (a heartbeat needs no PostgreSQL), the submit UPDATE
  transaction plus the Lua release.

Per side it reports items/s (median of ``--rounds`` rounds, floor and ours alternating)
and PostgreSQL work per item, counted two ways: *statements*, every ``execute`` /
``executemany`` that reaches psycopg in this process (SQLAlchemy's and the raw hot
paths' alike; ``BEGIN``, ``COMMIT`` and ``ROLLBACK`` sent as statements are left out, as
psycopg's implicit ``BEGIN`` is), and *transactions*, the change of
``pg_stat_database.xact_commit + xact_rollback`` of the bench's own database across the
phase (read after its connections are closed, so their statistics are flushed).
``pg_stat_statements`` is not used: it is not in ``shared_preload_libraries`` here. A
second pass at ``--heartbeats-low`` (default 2) shows how the counts grow with K.

Uses its own database (``wm_bench_longlease``) and Redis keys under ``wmlonglease:`` in
db 12; drops and deletes them at the end. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

from .common import (
    REPO_ROOT,
    RESULT,
    Config,
    clear_redis,
    create_database,
    create_schema,
    drop_database,
    make_wm,
    seed,
)
from .floor import ACQUIRE, CHECKOUT, EXTEND, HEARTBEAT, RELEASE, SUBMIT, lua, scratch_queue

BACKENDS = ("database", "redis")
_NOT_COUNTED = ("BEGIN", "COMMIT", "ROLLBACK")


# --- counting ---------------------------------------------------------------------------
class StatementCounter:
    """Counts the statements psycopg executes in this process while installed."""

    def __init__(self) -> None:
        self._count = itertools.count()
        self._taken = 0
        self._saved: dict[str, Any] = {}

    def _wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        counter = self

        def counted(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            text = query if isinstance(query, str) else str(getattr(query, "_obj", query))
            if not text.lstrip()[:8].upper().startswith(_NOT_COUNTED):
                next(counter._count)  # atomic under the GIL
            return original(cur, query, *args, **kwargs)

        return counted

    def install(self) -> None:
        for name in ("execute", "executemany"):
            self._saved[name] = getattr(psycopg.Cursor, name)
            setattr(psycopg.Cursor, name, self._wrap(self._saved[name]))

    def uninstall(self) -> None:
        for name, original in self._saved.items():
            setattr(psycopg.Cursor, name, original)
        self._saved.clear()

    def value(self) -> int:
        """Statements so far (reading it counts nothing)."""
        self._taken += 1
        return next(self._count) - self._taken


def transactions(cfg: Config) -> int:
    """``xact_commit + xact_rollback`` of the bench database (read from ``postgres``, so
    reading it adds nothing to it)."""
    time.sleep(0.3)  # closed backends flush their statistics as they exit
    with psycopg.connect(cfg.pg_admin_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (cfg.pg_db,),
        ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def counted(cfg: Config, counter: StatementCounter, out: dict[str, float]) -> Iterator[None]:
    """Statements and transactions of the block, into ``out`` (totals; per item later)."""
    x0 = transactions(cfg)  # its two statements are before the window, the second's after
    s0 = counter.value()
    yield
    out["statements"] = counter.value() - s0
    out["transactions"] = transactions(cfg) - x0


# --- the workload -----------------------------------------------------------------------
def run_agents(agents: int, items: int, one_item: Callable[[int], bool]) -> tuple[float, int]:
    """``agents`` threads calling ``one_item(agent)`` until ``items`` are done (or one
    finds the queue empty); returns (wall seconds, items done)."""
    tickets = itertools.count()
    done = itertools.count()
    errors: list[BaseException] = []

    def agent(k: int) -> None:
        try:
            while next(tickets) < items:
                if not one_item(k):
                    return
                next(done)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(k,), daemon=True) for k in range(agents)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return wall, next(done)


def ours(
    cfg: Config, backend: str, args: argparse.Namespace, k: int, counter: StatementCounter
) -> dict[str, float]:
    """The workload through ``wm.agent`` on ``backend``: items/s and PostgreSQL counts."""
    seed(cfg, args.items + args.agents)
    clear_redis(cfg)
    wm = make_wm(cfg, backend)
    sleep = args.sleep_ms / 1000

    def one_item(a: int) -> bool:
        lease: Any = wm.agent.checkout(f"ll-agent-{a}")
        if lease is None:
            return False
        for _ in range(k):
            if sleep:
                time.sleep(sleep)
            lease = wm.agent.heartbeat(lease)
        wm.agent.submit(lease, RESULT)
        return True

    out: dict[str, float] = {}
    try:
        with counted(cfg, counter, out):
            try:
                one_item(0)  # warm the pools and scripts (counted: one more item)
                wall, n = run_agents(args.agents, args.items - 1, one_item)
            finally:
                wm.close()
    finally:
        clear_redis(cfg)
    n += 1
    if n < args.items:
        raise RuntimeError(f"{backend}: the queue ran dry after {n} of {args.items} items")
    return _per_item(out, wall, n)


class BareAgents:
    """The floor's clients: a small psycopg pool and one redis-py client, shared by the
    agent threads, with the bare statements and Lua scripts of ``floor.py``."""

    def __init__(self, cfg: Config, backend: str, args: argparse.Namespace, k: int) -> None:
        self.conns: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self.r = redis.Redis.from_url(cfg.redis_url, max_connections=args.agents + 10)
        self.base = f"{cfg.redis_prefix}floor:"
        self.acquire, self.extend = lua(self.r, ACQUIRE), lua(self.r, EXTEND)
        self.release = lua(self.r, RELEASE)
        self.redis = backend == "redis"
        self.sleep = args.sleep_ms / 1000
        self.k = k

    def connect(self, cfg: Config, n: int) -> None:
        for _ in range(n):
            self.conns.put(psycopg.connect(cfg.dsn()))

    def txn(self, statement: str, params: tuple[Any, ...]) -> Any:
        """One transaction of one statement on a pooled connection (a row for CHECKOUT)."""
        c = self.conns.get()
        try:
            with c.transaction():
                cur = c.execute(statement, params)
                return cur.fetchone() if statement is CHECKOUT else None
        finally:
            self.conns.put(c)

    def one_item(self, a: int) -> bool:
        """Grant, K heartbeats, submit: ``a``'s next item, bare."""
        owner = f"ll-agent-{a}"
        row = self.txn(CHECKOUT, (owner,))
        if row is None:
            return False
        item, lock = row[0], f"{self.base}lock:{row[0]}"
        if self.redis:
            self.acquire(keys=[lock], args=[owner, 600])
        for _ in range(self.k):
            if self.sleep:
                time.sleep(self.sleep)
            if self.redis:
                self.extend(keys=[lock], args=[owner, 600])
            else:
                self.txn(HEARTBEAT, (item, owner))
        self.txn(SUBMIT, (item, owner))
        if self.redis:
            self.release(keys=[lock], args=[owner])
        return True

    def close(self) -> None:
        while not self.conns.empty():
            self.conns.get().close()

    def forget(self) -> None:
        _delete_under(self.r, self.base)
        self.r.close()


def floor(
    cfg: Config, backend: str, args: argparse.Namespace, k: int, counter: StatementCounter
) -> dict[str, float]:
    """The same workload's bare calls: psycopg transactions and (redis) Lua scripts."""
    setup = scratch_queue(cfg, args.items + args.agents)
    setup.autocommit = True
    bare = BareAgents(cfg, backend, args, k)
    out: dict[str, float] = {}
    try:
        with counted(cfg, counter, out):
            bare.connect(cfg, args.floor_conns)
            try:
                bare.one_item(0)  # warm up, as ours does
                wall, n = run_agents(args.agents, args.items - 1, bare.one_item)
            finally:
                bare.close()
    finally:
        setup.execute("drop table if exists bench_items, bench_parts")
        setup.close()
        bare.forget()
    return _per_item(out, wall, n + 1)


def _delete_under(r: redis.Redis, prefix: str) -> None:
    keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 1000):
        r.delete(*keys[start : start + 1000])


def _per_item(out: dict[str, float], wall: float, n: int) -> dict[str, float]:
    # ``wall`` times the threads only; the one warm-up item is counted, not timed.
    return {
        "items_per_s": (n - 1) / wall,
        "statements_per_item": out["statements"] / n,
        "transactions_per_item": out["transactions"] / n,
        "items": n,
    }


# --- rounds and the report --------------------------------------------------------------
def median(rounds: list[dict[str, float]]) -> dict[str, float]:
    ranked = sorted(rounds, key=lambda f: f["items_per_s"])
    speeds = [f["items_per_s"] for f in ranked]
    return {
        **ranked[len(ranked) // 2],
        "min_items_per_s": speeds[0],
        "max_items_per_s": speeds[-1],
        "rounds": len(ranked),
    }


def run(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    counter = StatementCounter()
    counter.install()
    result: dict[str, Any] = {"ours": {}, "floor": {}, "low": {"ours": {}, "floor": {}}}
    try:
        _step(f"creating database {cfg.pg_db}")
        create_database(cfg, cfg.pg_db)
        create_schema(cfg)
        rounds: dict[tuple[str, str], list[dict[str, float]]] = {}
        k = args.heartbeats
        for i in range(args.rounds):
            for backend in BACKENDS:
                for side, fn in (("floor", floor), ("ours", ours)):
                    _step(
                        f"round {i + 1}/{args.rounds}: {backend} {side}, {args.agents} agents,"
                        f" {args.items} items, K={k}"
                    )
                    rounds.setdefault((side, backend), []).append(
                        fn(cfg, backend, args, k, counter)
                    )
        for (side, backend), figs in rounds.items():
            result[side][backend] = median(figs)
        low = args.heartbeats_low
        for backend in BACKENDS:
            for side, fn in (("floor", floor), ("ours", ours)):
                _step(f"K={low}: {backend} {side}")
                result["low"][side][backend] = fn(cfg, backend, args, low, counter)
    finally:
        counter.uninstall()
    return result


def _step(message: str) -> None:
    print(f"bench.longlease: {message}…", file=sys.stderr, flush=True)


def render(r: dict[str, Any], args: argparse.Namespace) -> str:
    k, low = args.heartbeats, args.heartbeats_low
    ours, fl = r["ours"], r["floor"]
    lines = [
        f"Long leases: {args.agents} agents, K={k} heartbeats an item"
        f" ({'back to back' if not args.sleep_ms else f'{args.sleep_ms} ms sleep before each'}),"
        f" {args.items} items a round, median of {args.rounds} round(s)",
        "",
        f"{'backend':<9} {'items/s':>9} {'(min-max)':>15} {'floor':>8} {'ratio':>6}"
        f" {'stmts/item':>11} {'floor':>6} {'xacts/item':>11} {'floor':>6}",
    ]
    for b in BACKENDS:
        o, f = ours[b], fl[b]
        spread = f"{o['min_items_per_s']:.0f}-{o['max_items_per_s']:.0f}"
        lines.append(
            f"{b:<9} {o['items_per_s']:>9.1f} {spread:>15} {f['items_per_s']:>8.1f}"
            f" {o['items_per_s'] / f['items_per_s']:>5.2f}x"
            f" {o['statements_per_item']:>11.1f} {f['statements_per_item']:>6.1f}"
            f" {o['transactions_per_item']:>11.1f} {f['transactions_per_item']:>6.1f}"
        )
    redis_vs_db = ours["redis"]["items_per_s"] / ours["database"]["items_per_s"]
    floor_vs = fl["redis"]["items_per_s"] / fl["database"]["items_per_s"]
    lines += [
        "",
        f"redis / database: ours {redis_vs_db:.2f}x (target >= 2.5x); floors {floor_vs:.2f}x",
        "",
        f"PostgreSQL per item against K (ours; floor):   K={low}  ->  K={k}",
    ]
    for b in BACKENDS:
        lo_o, lo_f = r["low"]["ours"][b], r["low"]["floor"][b]
        hi_o, hi_f = ours[b], fl[b]
        for what in ("statements", "transactions"):
            key = f"{what}_per_item"
            lines.append(
                f"  {b:<9} {what:<12} {lo_o[key]:5.1f}; {lo_f[key]:4.1f}"
                f"   ->  {hi_o[key]:5.1f}; {hi_f[key]:4.1f}"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.longlease", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="fewer items and one round")
    ap.add_argument("--agents", type=int, default=50, help="agent threads (default 50)")
    ap.add_argument("--heartbeats", type=int, default=10, help="heartbeats an item (default 10)")
    ap.add_argument("--heartbeats-low", type=int, default=2, help="K of the second pass (2)")
    ap.add_argument("--items", type=int, help="items a round and side (default 600; quick 150)")
    ap.add_argument("--rounds", type=int, help="rounds (default 3; quick 1)")
    ap.add_argument("--sleep-ms", type=float, default=0.0, help="sleep before each heartbeat")
    ap.add_argument("--floor-conns", type=int, default=10, help="the floor's connections (10)")
    ap.add_argument(
        "--json", default=str(REPO_ROOT / "var" / "bench_longlease.json"), help="output file"
    )
    args = ap.parse_args(argv)
    if args.items is None:
        args.items = 150 if args.quick else 600
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    args.items = max(args.items, 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Config()
    cfg = replace(
        base,
        pg_db=os.environ.get("WM_BENCH_LONGLEASE_DB", "wm_bench_longlease"),
        redis_prefix="wmlonglease:",
    )
    start = time.perf_counter()
    try:
        r = run(cfg, args)
    finally:
        drop_database(cfg, cfg.pg_db)
        clear_redis(cfg)
    r["meta"] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()}",
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "seconds": round(time.perf_counter() - start, 1),
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(render(r, args))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=2))
    print(f"\nfigures written to {path} ({r['meta']['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
