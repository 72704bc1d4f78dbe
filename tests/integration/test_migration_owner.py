"""``db upgrade`` and the start-up check on databases that are not what they seem, and
an upgrade held up by tables in use.

A database another application's Alembic manages: ``db upgrade`` did nothing and said to
run ``db upgrade``, and every process started anyway. Workmanager's tables without
``alembic_version`` (a ``pg_dump -t 'work_*'`` restored): "no migration ran", then ``db
upgrade`` crashed with two tracebacks. An upgrade queued behind a long reader held every
request to the table for as long, or died a deadlock's victim with a traceback."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from workmanager.db import migrate
from workmanager.db.session import Database
from workmanager.errors import ConfigurationError, Unavailable


def refused(db: Database, says: str) -> None:
    """``db upgrade`` and the start-up check both refuse, with the same line."""
    for step in (migrate.upgrade, migrate.require_head):
        with pytest.raises(ConfigurationError) as raised:
            step(db)
        assert says in raised.value.message and raised.value.hint, raised.value.text()


def test_another_applications_alembic_database_is_refused(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/app.db")
    db.allow_create()  # the other application made its file
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY)"))
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('a1b2c3d4e5f6')"))
    refused(db, "is another application's: its alembic_version records revision a1b2c3d4e5f6")
    with db.engine.connect() as conn:  # nothing was created
        tables = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
    assert tables == {"users", "alembic_version"}


@pytest.mark.parametrize("where", ["sqlite", "postgres"])
def test_workmanagers_tables_without_their_revision_are_refused(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("fresh_pg") if where == "postgres" else f"sqlite:///{tmp_path}/r.db"
    )
    db = Database(url)
    migrate.upgrade(db)
    with db.engine.begin() as conn:  # restored without alembic_version
        conn.execute(text("DROP TABLE alembic_version"))
    refused(db, "has workmanager's tables but no recorded migration")
    db.dispose()


def test_an_upgrade_behind_a_long_reader_gives_up_in_one_line(
    fresh_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each try waits LOCK_TIMEOUT for the table, not as long as the reader holds it;
    past ATTEMPTS it is one `unavailable` line and nothing changed; once the reader is
    done the upgrade goes through."""
    db = Database(fresh_pg)
    migrate.upgrade(db, "0005")
    monkeypatch.setattr(migrate, "LOCK_TIMEOUT", "300ms")
    monkeypatch.setattr(migrate, "ATTEMPTS", 2)
    monkeypatch.setattr(migrate.time, "sleep", lambda _: None)
    reader = psycopg.connect(fresh_pg.replace("postgresql+psycopg", "postgresql"))
    reader.execute("SELECT count(*) FROM work_items")  # a transaction holding the table
    with pytest.raises(Unavailable) as raised:
        migrate.upgrade(db)
    assert "waited on tables in use 2 times" in raised.value.message
    assert "nothing was changed" in raised.value.message and "pg_stat_activity" in (
        raised.value.hint or ""
    )
    assert migrate.current(db) == "0005"
    done = threading.Timer(0.5, reader.rollback)  # the reader finishes while it waits
    done.start()
    monkeypatch.setattr(migrate, "ATTEMPTS", 20)
    migrate.upgrade(db)
    assert migrate.current(db) == migrate.head()
    reader.close()
    db.dispose()
