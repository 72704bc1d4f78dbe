"""Driver errors through both executors (the ORM's sessions, the PostgreSQL store's raw
connections) come out as the same project errors (db/driver_errors.py), on real servers."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from workmanager.errors import SchemaOutdated, ValidationFailed


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
