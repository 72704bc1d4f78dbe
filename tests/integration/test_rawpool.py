"""The hot paths' connection pool (workmanager.db.rawpool / RawPostgres) on a real
PostgreSQL: bounded, last in first out, stale connections pinged and replaced, fail-fast
when the server is down, and a pool of its own in a forked child."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading
import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine

from tests.support.waiting import wait_for
from workmanager.db.raw import RawPostgres
from workmanager.db.rawpool import RawPool
from workmanager.db.session import Database, lost_at
from workmanager.errors import Unavailable

pytestmark = pytest.mark.postgres


@pytest.fixture
def dsn(pg_url: str) -> str:
    return pg_url.replace("postgresql+psycopg://", "postgresql://")


def _pool(dsn: str, **kw: Any) -> RawPool:
    made: list[psycopg.Connection[Any]] = []

    def connect() -> psycopg.Connection[Any]:
        conn = psycopg.connect(dsn, autocommit=True)
        made.append(conn)
        return conn

    options = {"max_size": 3, "max_idle": 2, "timeout": 0.3, "ping_after": 60.0, **kw}
    pool = RawPool(connect, **options)
    pool.made = made  # type: ignore[attr-defined]
    return pool


def _pid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def _kill(dsn: str, pids: list[int]) -> None:
    """Terminate those backends and wait until they are gone (``pg_terminate_backend`` only
    signals them: a fixed sleep after it raced their exit on a loaded machine)."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        def gone() -> bool:
            query = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)"
            row = admin.execute(query, (pids,)).fetchone()
            return row is not None and row[0] == 0

        wait_for(gone, timeout=30, what=f"backends {pids} to exit")


def test_last_in_first_out_and_connections_beyond_max_idle_kept_while_used(dsn: str) -> None:
    pool = _pool(dsn)  # max_idle 2, trim_after 60 s
    a, b, c = pool.checkout(), pool.checkout(), pool.checkout()
    assert pool.lent == 3 and len(pool.made) == 3  # type: ignore[attr-defined]
    for conn in (a, b, c):
        pool.checkin(conn, healthy=True)
    # the third beyond max_idle is kept: a burst as wide again reuses it, no new connection
    assert (pool.lent, pool.idle) == (0, 3) and not (a.closed or b.closed or c.closed)
    again = pool.checkout()
    assert again is c  # the last one back goes out first
    pool.checkin(again, healthy=True)
    burst = [pool.checkout() for _ in range(3)]
    assert len(pool.made) == 3  # type: ignore[attr-defined]
    for conn in burst:
        pool.checkin(conn, healthy=True)
    pool.close()


def test_a_connection_beyond_max_idle_is_closed_once_unused_for_trim_after(dsn: str) -> None:
    pool = _pool(dsn, trim_after=0.05)
    a, b, c = pool.checkout(), pool.checkout(), pool.checkout()
    for conn in (a, b, c):
        pool.checkin(conn, healthy=True)
    assert pool.idle == 3
    time.sleep(0.1)  # a, the longest unused, has now sat longer than trim_after
    d = pool.checkout()
    pool.checkin(d, healthy=True)
    assert d is c and a.closed and not b.closed and not c.closed and pool.idle == 2
    time.sleep(0.1)
    pool.checkin(pool.checkout(), healthy=True)
    assert pool.idle == 2 and not b.closed  # max_idle are kept for good
    pool.close()


def test_an_unhealthy_connection_is_closed_not_pooled(dsn: str) -> None:
    pool = _pool(dsn)
    conn = pool.checkout()
    pool.checkin(conn, healthy=False)
    assert conn.closed and pool.idle == 0 and pool.lent == 0
    pool.close()


def test_a_caller_beyond_max_size_waits_then_gets_unavailable(dsn: str) -> None:
    pool = _pool(dsn, max_size=2)
    held = [pool.checkout(), pool.checkout()]
    start = time.monotonic()
    with pytest.raises(Unavailable, match="no database connection free"):
        pool.checkout()
    assert time.monotonic() - start >= 0.25
    for conn in held:
        pool.checkin(conn, healthy=True)
    pool.close()


def test_a_waiting_caller_gets_the_first_connection_back(dsn: str) -> None:
    pool = _pool(dsn, max_size=2, timeout=30.0)
    held = [pool.checkout(), pool.checkout()]
    timer = threading.Timer(0.1, pool.checkin, args=(held[1],), kwargs={"healthy": True})
    timer.start()
    assert pool.checkout() is held[1]  # waited for it, well before the timeout
    timer.join()
    for conn in held:
        pool.checkin(conn, healthy=True)
    assert (pool.lent, pool.idle) == (0, 2)
    pool.close()


def test_a_failed_connect_gives_its_slot_back() -> None:
    attempts: list[int] = []

    def refused() -> psycopg.Connection[Any]:
        attempts.append(1)
        return psycopg.connect("host=127.0.0.1 port=1 dbname=x connect_timeout=2")

    pool = RawPool(refused, max_size=1, max_idle=1, timeout=0.2, ping_after=60.0)
    for _ in range(3):  # a leaked slot would make the second one "no connection free"
        with pytest.raises(psycopg.OperationalError):
            pool.checkout()
    assert len(attempts) == 3 and pool.lent == 0


def test_a_connection_back_inside_a_transaction_is_closed_not_pooled(dsn: str) -> None:
    pool = _pool(dsn)
    conn = pool.checkout()
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    pool.checkin(conn, healthy=True)
    assert conn.closed and pool.idle == 0
    again = pool.checkout()
    assert again is not conn and again.info.transaction_status.name == "IDLE"
    pool.checkin(again, healthy=True)
    pool.close()


def test_a_closed_pool_still_lends_but_keeps_nothing(dsn: str) -> None:
    pool = _pool(dsn)
    idle = pool.checkout()
    pool.checkin(idle, healthy=True)
    pool.close()
    assert idle.closed and pool.idle == 0
    late = pool.checkout()
    assert _pid(late) > 0
    pool.checkin(late, healthy=True)
    assert late.closed and pool.idle == 0


def test_many_threads_never_hold_more_than_max_size(dsn: str) -> None:
    pool = _pool(dsn, max_size=3, max_idle=3, timeout=10.0)
    lock = threading.Lock()
    out = peak = 0

    def borrow(_: int) -> int:
        nonlocal out, peak
        conn = pool.checkout()
        with lock:
            out += 1
            peak = max(peak, out)
        try:
            return _pid(conn)
        finally:
            with lock:
                out -= 1
            pool.checkin(conn, healthy=True)

    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        pids = list(ex.map(borrow, range(300)))
    assert len(pids) == 300 and peak <= 3 and len(set(pids)) <= 3
    assert pool.lent == 0 and len(pool.made) <= 3  # type: ignore[attr-defined]
    pool.close()


def test_a_connection_idle_past_ping_after_is_pinged_and_replaced_if_dead(dsn: str) -> None:
    pool = _pool(dsn, ping_after=0.05)
    conn = pool.checkout()
    dead = _pid(conn)
    pool.checkin(conn, healthy=True)
    _kill(dsn, [dead])
    time.sleep(0.1)  # idle past ping_after (0.05 s): a duration, not a race
    fresh = pool.checkout()  # the ping finds it dead: a new connection, no error
    assert fresh is not conn and conn.closed and _pid(fresh) != dead
    pool.checkin(fresh, healthy=True)
    pool.close()


def test_a_fresh_connection_is_not_pinged_until_the_server_is_marked_lost(dsn: str) -> None:
    marks = [0.0]
    pool = _pool(dsn, ping_after=60.0, lost_at=lambda: marks[-1])
    conn = pool.checkout()
    pool.checkin(conn, healthy=True)
    _kill(dsn, [_pid_of_idle(pool)])
    same = pool.checkout()  # fresh: lent without a ping (its next statement would fail)
    assert same is conn
    pool.checkin(same, healthy=True)
    marks.append(time.monotonic())
    replaced = pool.checkout()  # pooled before the loss: pinged, found dead, replaced
    assert replaced is not conn and _pid(replaced) > 0
    pool.checkin(replaced, healthy=True)
    pool.close()


def test_a_disconnect_the_orm_sees_makes_the_hot_paths_pool_ping_too(pg_url: str) -> None:
    from sqlalchemy import text

    db = Database(pg_url)
    try:
        with db.raw.connection() as conn:
            raw_pid = _pid(conn)  # one fresh idle connection: not pinged by age
        with db.transaction() as s:
            orm_pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        _kill(pg_url.replace("postgresql+psycopg://", "postgresql://"), [raw_pid, orm_pid])
        before = lost_at(db.engine)
        with pytest.raises(Unavailable), db.transaction() as s:
            s.execute(text("SELECT 1"))
        assert lost_at(db.engine) > before
        with db.raw.connection() as conn:  # pinged, found dead, replaced: no error
            assert _pid(conn) != raw_pid
    finally:
        db.dispose()


def _pid_of_idle(pool: RawPool) -> int:
    conn = pool.checkout()
    try:
        return _pid(conn)
    finally:
        pool.checkin(conn, healthy=True)


def test_a_server_that_is_down_fails_at_once_as_unavailable() -> None:
    raw = RawPostgres(create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere"))
    start = time.monotonic()
    with pytest.raises(Unavailable, match="database unavailable"), raw.connection():
        pass
    assert time.monotonic() - start < 5
    assert raw.pool.lent == 0  # the slot was given back
    raw.close()


def _child(raw: RawPostgres, parent_pool_id: int, answer: Any) -> None:
    try:
        with raw.connection() as conn:
            row = conn.execute("SELECT 1").fetchone()
        answer.put((id(raw.pool) != parent_pool_id, row == (1,)))
    except Exception as exc:  # pragma: no cover - reported to the parent
        answer.put(repr(exc))


def test_a_forked_child_gets_a_pool_of_its_own_and_leaves_the_parents_alone(
    pg_url: str,
) -> None:
    raw = RawPostgres(create_engine(pg_url))
    with raw.connection() as conn:
        parent_pid = _pid(conn)
    parent_pool = raw.pool
    ctx = multiprocessing.get_context("fork")
    answer = ctx.Queue()
    child = ctx.Process(target=_child, args=(raw, id(parent_pool), answer))
    child.start()
    child.join(30)
    assert answer.get(timeout=5) == (True, True)
    assert raw.pool is parent_pool
    with raw.connection() as conn:  # the child did not close the parent's connection
        assert _pid(conn) == parent_pid
    raw.close()
