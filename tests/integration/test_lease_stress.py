"""Leasing under real concurrency: 8 agent processes over one pool of items (SPEC §4.4, §4.5).

Each process (``tests/support/lease_worker.py``) builds its own WorkManager on the same
PostgreSQL database (and Redis prefix), checks out, sometimes heartbeats or releases,
submits, presents stale tokens on purpose, and sweeps while it waits. Every grant and
outcome is logged; the tests then check the logs against the database: each (item,
token) granted once, each item submitted exactly once by the holder of its last token,
nothing lost, every stale token refused, no grant of an item while a released lease of
it was still held. Variants: a process SIGKILLed while holding leases (also on the
embedded default, a SQLite file with the database lease backend), and a Redis FLUSHDB in
the middle of a run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from tests.support.types import Multi
from workmanager import Registry, WorkManager
from workmanager.db.models import Event, Item, Order

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 8
ORDERS, ITEMS_PER_ORDER = 20, 20  # 400 items
REFUSED = {"LeaseConflict", "LeaseExpired"}


@dataclass
class Pool:
    """A pool of items and the agent processes working on it."""

    wm: WorkManager
    config: dict[str, Any]
    tmp: Path
    items: set[str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, agent: str, **overrides: Any) -> None:
        config = {
            **self.config,
            "agent": agent,
            "log": str(self.tmp / f"{agent}.log"),
            "seed": len(self.procs),
            **overrides,
        }
        with open(self.tmp / f"{agent}.err", "wb") as err:
            self.procs[agent] = subprocess.Popen(
                [sys.executable, "-m", "tests.support.lease_worker", json.dumps(config)],
                cwd=ROOT,
                stderr=err,
            )

    def records(self, agent: str | None = None) -> list[dict[str, Any]]:
        names = [agent] if agent else list(self.procs)
        out = []
        for name in names:
            path = self.tmp / f"{name}.log"
            if path.exists():
                out += [json.loads(line) for line in path.read_text().splitlines()]
        return out

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"timed out waiting for {what}\n{self.stderr()}")
            time.sleep(0.02)

    def finish(self, timeout: float = 100, killed: frozenset[str] = frozenset()) -> None:
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            try:
                code = proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.stop()
                pytest.fail(f"{name} did not finish\n{self.stderr()}")
            expected = -signal.SIGKILL if name in killed else 0
            assert code == expected, f"{name} exited {code}\n{self.stderr()}"

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def stderr(self) -> str:
        return "\n".join(
            f"--- {name}\n{(self.tmp / f'{name}.err').read_text()[-3000:]}" for name in self.procs
        )

    def count(self, *states: str) -> int:
        with self.wm.db.transaction() as s:
            return int(s.scalar(select(func.count()).where(Item.state.in_(states))) or 0)


@pytest.fixture
def pool(make_wm, request, tmp_path) -> Any:
    """``pool(backend, ttl, redis=None, orders=20, db="postgres")``: orders of 20 queued
    items on PostgreSQL, or (``db="sqlite"``) on the SQLite file the embedded default uses."""
    made: list[Pool] = []

    def build(
        backend: str,
        ttl: int,
        redis: str | None = None,
        orders: int = ORDERS,
        deadline: int = 90,
        db: str = "postgres",
    ) -> Pool:
        prefix = f"wmstress:{uuid.uuid4().hex[:8]}:"
        cluster = backend == "redis-cluster"  # the session's Redis Cluster holds the leases
        if cluster and redis is None:
            redis = request.getfixturevalue("redis_cluster").url
        url = redis or (request.getfixturevalue("redis_url") if backend == "redis" else "")
        wm = make_wm(
            db=db,
            backend=backend,
            registry=Registry([Multi()]),
            **({"redis_url": url} if url else {}),  # none: the default, unused
            redis_prefix=prefix,
            lease_ttl_seconds=ttl,
            default_max_attempts=50,
            retry_backoff_seconds=0,
            retry_jitter_seconds=0,
        )
        for _ in range(orders):
            wm.propose("test.multi", {"count": ITEMS_PER_ORDER})
        with wm.db.transaction() as s:
            items = {str(i) for i in s.scalars(select(Item.id))}
        config = {
            "database_url": wm.settings.database_url,
            "redis_url": url,
            "redis_prefix": prefix,
            "ttl": ttl,
            "hold": 0,
            "deadline": deadline,
            "backend": "redis" if cluster else backend,
            "redis_cluster": cluster,
        }
        made.append(Pool(wm, config, tmp_path, items))
        return made[-1]

    yield build
    for p in made:
        p.stop()


def check_exactly_once(pool: Pool, killed: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every invariant of the run, from the logs and the database. Returns the figures."""
    records = pool.records()
    by_event: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_event[r["ev"]].append(r)
    grants, submits = by_event["grant"], by_event["submit"]

    # No double grant: a token is granted for an item once, and every item was granted.
    pairs = Counter((g["item"], g["token"]) for g in grants)
    assert max(pairs.values()) == 1, [p for p, n in pairs.items() if n > 1][:5]
    assert {g["item"] for g in grants} == pool.items
    # Nothing lost, nothing done twice: each item submitted once, by its last token.
    done = Counter(r["item"] for r in submits)
    assert set(done) == pool.items and max(done.values()) == 1
    last_token = {i: max(t for (j, t) in pairs if j == i) for i in pool.items}
    assert all(r["token"] == last_token[r["item"]] for r in submits)
    # A stale token was refused every time it was presented.
    stale = by_event["stale"]
    assert stale and {r["error"] for r in stale} <= REFUSED, Counter(r["error"] for r in stale)
    # Every grant of a living process ended: submitted, released, or lost under it.
    ends = Counter(
        (r["item"], r["token"]) for r in submits + by_event["release"] + by_event["lost"]
    )
    live = [(g["item"], g["token"]) for g in grants if g["agent"] not in killed]
    assert all(ends[p] == 1 for p in live)
    # No grant of an item while a released lease of it was still held.
    released = {(r["item"], r["token"]): r["t0"] for r in by_event["release"]}
    for g in grants:
        before = [t for (i, t) in released if i == g["item"] and t < g["token"]]
        assert all(g["t"] > released[(g["item"], t)] for t in before), g
    check_database(pool, {r["item"]: r for r in submits})
    return {"grants": len(grants), "stale": len(stale), "lost": len(by_event["lost"])}


def check_database(pool: Pool, submits: dict[str, dict[str, Any]]) -> None:
    with pool.wm.db.transaction() as s:
        items = list(s.scalars(select(Item)))
        submitted = Counter(
            str(i) for i in s.scalars(select(Event.item_id).where(Event.event == "submitted"))
        )
        orders = set(s.scalars(select(Order.state)))
    assert orders == {"submitted"}
    for item in items:
        key, log = str(item.id), submits[str(item.id)]
        assert item.state == "submitted" and submitted[key] == 1
        assert item.result == {"agent": log["agent"], "token": log["token"]}
        assert item.lease_token == log["token"] and item.leased_by_agent_id is None


@pytest.mark.postgres
@pytest.mark.parametrize(
    "backend",
    [
        "database",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ],
)
def test_processes_never_double_grant_or_lose_an_item(pool, backend) -> None:
    # 200 items: 25 a process, every one of them contended by the 8 (400 proved no more and
    # took twice as long; ``make soak`` runs thousands)
    run = pool(backend, ttl=15, orders=10)
    for n in range(PROCESSES):
        run.start(f"agent-{n}")
    run.finish()
    figures = check_exactly_once(run)
    assert figures["grants"] >= len(run.items) and figures["lost"] == 0, figures


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_killed_holder_loses_its_leases_and_others_finish_them(pool, backend) -> None:
    run_with_a_killed_holder(pool(backend, ttl=4, orders=10))


def test_a_killed_holder_on_the_embedded_sqlite_default(pool) -> None:
    """The embedded default (a SQLite file, the database lease backend) under the same 8
    processes, one SIGKILLed while it holds leases: no double grant, every item submitted
    once (the killed holder's by others, after the sweep reclaimed them)."""
    run_with_a_killed_holder(pool("database", ttl=3, orders=10, deadline=60, db="sqlite"))


def run_with_a_killed_holder(run: Pool, hold: int = 12) -> None:
    """A victim takes ``hold`` leases alone, the others start, the victim is SIGKILLed
    while they work; then every invariant, and the victim's items finished by others."""
    run.start("victim", hold=hold)  # alone first: its grants cannot race the others' drain
    run.wait_for("the victim to hold its leases", lambda: bool(run.records("victim")[-1:]))
    run.wait_for(
        "the victim to hold its leases",
        lambda: run.records("victim")[-1]["ev"] == "holding",
    )
    for n in range(PROCESSES - 1):
        run.start(f"agent-{n}")
    run.wait_for(  # killed while the others work
        "the others to start", lambda: len(run.records()) > len(run.records("victim"))
    )
    os.kill(run.procs["victim"].pid, signal.SIGKILL)
    run.finish(killed=frozenset({"victim"}))
    check_exactly_once(run, killed=frozenset({"victim"}))
    victim = {g["item"]: g["token"] for g in run.records("victim") if g["ev"] == "grant"}
    assert len(victim) == hold
    with run.wm.db.transaction() as s:
        for item_id, token in victim.items():
            item = s.get(Item, uuid.UUID(item_id))
            assert item is not None and item.lease_token > token and item.attempts >= 2
            assert item.result is not None and item.result["agent"] != "victim"
            expired = s.scalar(
                select(func.count()).where(Event.item_id == item.id, Event.event == "lease_expired")
            )
            assert expired and expired >= 1


def flush_redis_url(redis_url: str) -> str:
    """A Redis database of its own for the FLUSHDB test, so it wipes nobody else's keys
    (not the Celery tests' broker, which may be running at the same time: ``make test``
    runs tests in parallel)."""
    return os.environ.get("WM_TEST_REDIS_FLUSH_URL", redis_url.rsplit("/", 1)[0] + "/12")


@pytest.mark.postgres
@pytest.mark.redis
def test_redis_flushdb_mid_run_then_sweep_loses_and_doubles_nothing(
    pool, redis_url, tmp_path
) -> None:
    url = flush_redis_url(redis_url)
    run = pool("redis", ttl=60, redis=url, orders=10)  # 200 items
    gate = tmp_path / "gate"
    run.start("slow", gate=str(gate))  # holds its first lease until the gate opens
    # its grant first: started beside the others on a loaded machine, it once came up
    # after they had leased every item (a CI run), and there was no lease to flush under it
    run.wait_for(
        "the slow agent's grant",
        lambda: any(r["ev"] == "grant" for r in run.records("slow")),
    )
    for n in range(PROCESSES - 1):
        run.start(f"agent-{n}")
    run.wait_for("a quarter of the items", lambda: run.count("submitted") >= 50)
    # Its one grant, held across the flush: its submit waits for the gate. (It may also
    # have logged a stale-token probe made before the work.)
    [slow] = [r for r in run.records("slow") if r["ev"] == "grant"]
    held = run.count("leased", "in_progress")
    # Measured before the flush: the others drain what the sweep requeues within
    # milliseconds, so after it there may be nothing left even though the flush was mid-run.
    left = len(run.items) - run.count("submitted")
    redis.Redis.from_url(url).flushdb()
    swept = run.wm.sweeper.sweep()
    gate.touch()
    print(f"flush: {held} held, {swept.reclaimed} reclaimed at once, {left} left")
    run.finish()
    figures = check_exactly_once(run)
    assert left > 0 and held > 0
    # The sweep right after the flush reclaimed the leases the flush took.
    assert uuid.UUID(slow["item"]) in swept.requeued["test.multi"]
    lost = {(r["item"], r["token"]) for r in run.records("slow") if r["ev"] == "lost"}
    assert (slow["item"], slow["token"]) in lost  # its holder was refused from then on
    print(figures)


@pytest.mark.postgres
@pytest.mark.redis
def test_redis_cluster_master_killed_mid_run_loses_and_doubles_nothing(
    pool, tmp_path_factory
) -> None:
    """A master of a Redis Cluster of this test's own is SIGKILLed while 8 processes lease
    from it; its replica is promoted. Calls on its slots answer Unavailable meanwhile (the
    workers make them again); locks it had not yet replicated are lost, their holders are
    refused and the sweep reclaims them; every item is submitted once, no token twice."""
    from tests.conftest import need
    from tests.support.redis_cluster import LocalCluster, available

    reason = available()
    if reason:
        need("Redis Cluster", reason)  # skipped locally, a failure in CI
    cluster = LocalCluster(tmp_path_factory.mktemp("failover-cluster")).start()
    try:
        # every node listed: a process slow to start (a loaded machine) came up after the
        # kill and found only the dead node (agent-6 exited 1 in a CI run)
        # 300 items, the kill after the first 30: a make test run on a loaded machine
        # once polled its count only after all 200 of a smaller run were done
        run = pool("redis-cluster", ttl=4, redis=cluster.all_nodes_url, orders=15)
        for n in range(PROCESSES):
            run.start(f"agent-{n}")
        run.wait_for("a tenth of the items", lambda: run.count("submitted") >= 30)
        # Measured before the kill, as in the flush test: once the replica serves, the
        # others drain what is left within a second, maybe before the kill returns.
        left = len(run.items) - run.count("submitted")
        killed = cluster.kill_master()
        run.finish()
        figures = check_exactly_once(run)
        unavailable = sum(1 for r in run.records() if r["ev"] == "unavailable")
        print(
            f"master {killed} killed with {left} items left before it; {unavailable} calls retried"
        )
        print(figures)
        assert left > 0
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize(
    "backend",
    [
        "database",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ],
)
def test_soak_thousands_of_items(pool, backend) -> None:
    """``make soak``: the same invariants over WM_SOAK_ORDERS x 20 items (default 5,000)."""
    orders = int(os.environ.get("WM_SOAK_ORDERS", "250"))
    run = pool(backend, ttl=15, orders=orders, deadline=1200)
    for n in range(PROCESSES):
        run.start(f"agent-{n}")
    run.finish(timeout=1300)
    figures = check_exactly_once(run)
    assert figures["grants"] >= orders * ITEMS_PER_ORDER and figures["lost"] == 0, figures
