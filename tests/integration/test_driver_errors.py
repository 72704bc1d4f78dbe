"""Driver errors through both executors (the ORM's sessions, the PostgreSQL store's raw
connections) come out as the same project errors (db/driver_errors.py), on real servers."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.support.types import Simple
from workmanager import Registry
from workmanager.errors import PayloadTooLarge, SchemaOutdated, ValidationFailed


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_the_orm_translates_missing_tables_and_unstorable_values(make_wm, db) -> None:
    wm = make_wm(db=db)
    with pytest.raises(SchemaOutdated, match="older one"), wm.db.transaction() as s:
        s.execute(text("SELECT * FROM no_such_table"))
    if db == "postgres":  # SQLite stores anything it is given
        with pytest.raises(ValidationFailed) as refused, wm.db.transaction() as s:
            s.execute(text("SELECT CAST('x' AS integer)"))
        assert refused.value.details[0]["validator"] == "storable"


@pytest.mark.postgres
def test_the_raw_connections_translate_the_same_way(make_wm) -> None:
    wm = make_wm(db="postgres")
    with pytest.raises(SchemaOutdated, match="older one"):
        wm.db.raw.run(lambda conn: conn.execute("SELECT * FROM no_such_table"))
    with pytest.raises(ValidationFailed) as refused:
        wm.db.raw.run(lambda conn: conn.execute("SELECT CAST('x' AS integer)"))
    assert refused.value.details[0]["validator"] == "storable"
    # the connection went back healthy: the next call works
    assert wm.db.raw.run(lambda conn: conn.execute("SELECT 1").fetchone()) == (1,)


@pytest.mark.postgres
def test_a_limit_of_the_database_is_too_large_never_an_outage(make_wm) -> None:
    """Class 54 (program limit exceeded: a jsonb string past 256 MB, here 101 arguments)
    was 503 ``unavailable``, and a Celery create retried it for ever."""
    wm = make_wm(db="postgres")
    many = f"SELECT concat({', '.join(['1'] * 101)})"
    with pytest.raises(PayloadTooLarge, match="cannot store a value this large"):
        wm.db.raw.run(lambda conn: conn.execute(many))
    with pytest.raises(PayloadTooLarge), wm.db.transaction() as s:
        s.execute(text(many))


def test_a_sqlite_lock_held_past_the_wait_is_503_with_a_hint(tmp_path) -> None:
    """Found by an adversarial pass: "database unavailable: database is locked" had no
    hint (every mistake gets one), after the 30 s wait for another process's write lock."""
    import sqlite3

    from sqlalchemy import create_engine

    from workmanager.db.session import Database
    from workmanager.errors import Unavailable

    url = f"sqlite:///{tmp_path}/wm.db"
    Database(url).create_all()
    db = Database(url, engine=create_engine(url, connect_args={"timeout": 0.2}))
    holder = sqlite3.connect(tmp_path / "wm.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(Unavailable) as locked, db.transaction() as s:
            s.execute(text("INSERT INTO work_rate_buckets VALUES ('k', 1, 1)"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        db.dispose()
    assert "database is locked" in locked.value.message
    assert locked.value.hint is not None and "write lock" in locked.value.hint


def _deadlocked(wm, victim):
    """Run ``victim`` in a thread that reads work_orders then work_items, while another
    connection holds work_items and then asks for work_orders (a migration's ALTERs in
    that order): PostgreSQL aborts the one that waited first, the victim. Returns what
    ``victim`` returned or raised."""
    import threading
    import time

    import psycopg

    dsn = wm.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    out: dict[str, object] = {}
    with psycopg.connect(dsn) as holder:
        holder.execute("SET deadlock_timeout = '30s'")  # the victim checks first (1 s)
        holder.execute("LOCK TABLE work_items IN ACCESS EXCLUSIVE MODE")

        def run() -> None:
            try:
                out["value"] = victim()
            except Exception as exc:
                out["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        waiting = (
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'work_items'::regclass"
        )
        deadline = time.monotonic() + 10
        while holder.execute(waiting).fetchone() == (0,) and time.monotonic() < deadline:
            time.sleep(0.02)  # until the victim holds work_orders and waits for work_items
        holder.execute("LOCK TABLE work_orders IN ACCESS EXCLUSIVE MODE")
        holder.rollback()
        thread.join(10)
    return out


@pytest.mark.postgres
def test_a_deadlock_victim_is_503_try_again_and_run_runs_it_again(make_wm) -> None:
    """Found by an upgrade pass: a read PostgreSQL chose as a deadlock victim while a
    migration's ALTERs ran (``GET /orders`` during ``db upgrade``) answered 500. It is
    ``Contention`` (503 ``unavailable``, nothing changed) through both executors, and
    ``run()`` runs the transaction again."""
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from workmanager.api import create_app
    from workmanager.db.models import Item, Order
    from workmanager.errors import Contention

    wm = make_wm(db="postgres", auth="none", registry=Registry([Simple()]))

    def orm_read(s):
        s.execute(select(Order.id).limit(1)).all()
        return s.execute(select(Item.id).limit(1)).all()

    def once():
        with wm.db.transaction() as s:
            return orm_read(s)

    def raw_read(conn):  # its connections are in autocommit mode: one transaction here
        with conn.transaction():
            conn.execute("SELECT id FROM work_orders LIMIT 1").fetchall()
            return conn.execute("SELECT id FROM work_items LIMIT 1").fetchall()

    def raw_once():
        with wm.db.raw.connection() as conn:
            return raw_read(conn)

    for victim in (once, raw_once):
        said = _deadlocked(wm, victim)
        assert isinstance(said.get("error"), Contention), said
        assert said["error"].http_status == 503 and said["error"].code == "unavailable"
    assert _deadlocked(wm, lambda: wm.db.run(orm_read)) == {"value": []}
    assert _deadlocked(wm, lambda: wm.db.raw.run(raw_read)) == {"value": []}
    wm.propose("test.simple", {})  # so the list reads its items after its orders
    http = TestClient(create_app(wm))
    said = _deadlocked(wm, lambda: http.get("/agent/work/orders", params={"include": "items"}))
    answer = said["value"]
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "unavailable" and "Retry-After" in answer.headers
    assert http.get("/agent/work/orders").json()["meta"]["total"] == 1  # and then it answers


def test_a_database_host_that_does_not_resolve_is_unavailable_with_a_hint() -> None:
    """psycopg's "failed to resolve host" matched no marker: a traceback from every
    command, 500 from the API's reads."""
    import psycopg

    from workmanager.db.driver_errors import translate
    from workmanager.errors import Unavailable

    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect("postgresql://postgres@nosuch.invalid/x", connect_timeout=5)
    error = translate(raised.value, "the URL", operational=True)
    assert isinstance(error, Unavailable), error
    assert "does not resolve" in (error.hint or "")


@pytest.mark.redis
def test_a_redis_database_the_server_has_not_is_unavailable_with_a_hint(redis_url) -> None:
    """``DB index is out of range`` was raised as it was: 500 from a checkout, and an
    agent's message taken and dropped."""
    import redis

    from workmanager.errors import Unavailable
    from workmanager.leases.redis import translated

    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/9999")
    with pytest.raises(redis.ResponseError) as raised:
        client.ping()
    error = translated(raised.value)
    assert isinstance(error, Unavailable) and "databases" in (error.hint or "")
    client.close()
