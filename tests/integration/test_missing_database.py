"""The database layer names what is missing, for every adapter: no SQLite file (and none
created behind the user's back), no tables, no PostgreSQL database — each an
``Unavailable`` with a hint, a 503 envelope over HTTP, never a driver traceback."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import PG_ADMIN_DSN, PG_HOST_URL, need
from tests.support.types import Simple
from workmanager import Registry, Settings, WorkManager
from workmanager.api import create_app
from workmanager.db.migrate import upgrade
from workmanager.db.session import Database, display_url
from workmanager.errors import DatabaseMissing, SchemaOutdated, Unavailable


def manager(url: str) -> WorkManager:
    settings = Settings(
        database_url=url, lease_backend="database", metrics_driver="null", auth="none"
    )
    return WorkManager(settings, registry=Registry([Simple()]))


def test_a_missing_sqlite_file_is_reported_and_never_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "wm.db"
    wm = manager(f"sqlite:///{path}")
    try:
        with pytest.raises(DatabaseMissing) as caught:
            wm.queries.order(uuid.uuid4())
        assert str(path) in caught.value.message and "db upgrade" in (caught.value.hint or "")
        with pytest.raises(DatabaseMissing):
            wm.db.ping()
        assert not (tmp_path / "var").exists()
        upgrade(wm.db)  # the command that asks for a new database creates it
        assert path.exists()
    finally:
        wm.close()


def test_no_tables_is_schema_outdated_and_a_503_over_http(tmp_path: Path) -> None:
    path = tmp_path / "wm.db"
    path.touch()  # a database file, but `db upgrade` never ran
    wm = manager(f"sqlite:///{path}")
    try:
        with pytest.raises(SchemaOutdated) as caught:
            wm.propose("test.simple", {})
        assert "no such table" in caught.value.message and "db upgrade" in str(caught.value.hint)
        response = TestClient(create_app(wm)).get("/agent/work/orders")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
    finally:
        wm.close()


def postgres_answers() -> None:
    """Skip (a failure when ``CI`` is set) unless the PostgreSQL server answers."""
    try:
        import psycopg

        psycopg.connect(PG_ADMIN_DSN, connect_timeout=3).close()
    except Exception as exc:
        need("PostgreSQL", str(exc))


def test_display_url_masks_the_password_and_makes_sqlite_absolute() -> None:
    shown = display_url("postgresql+psycopg://wm:hunter2@db.internal:5432/wm")
    assert "hunter2" not in shown and "db.internal" in shown
    assert display_url("sqlite:///./var/x.db") == f"sqlite:///{Path.cwd() / 'var' / 'x.db'}"


def test_a_missing_postgres_database_and_a_refused_connection() -> None:
    postgres_answers()
    missing = Database(f"{PG_HOST_URL}/wm_no_such_database_{uuid.uuid4().hex[:6]}")
    refused = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(DatabaseMissing) as caught, missing.transaction() as session:
            session.execute(text("SELECT 1"))
        assert "does not exist" in caught.value.message and "createdb" in str(caught.value.hint)
        with pytest.raises(Unavailable) as down, refused.transaction() as session:
            session.execute(text("SELECT 1"))
        assert "server running" in str(down.value.hint)
    finally:
        missing.dispose()
        refused.dispose()


def test_every_postgres_path_names_a_missing_database_and_a_refused_connection() -> None:
    """A review pass: the PostgreSQL store's own connections (``db/raw.py``: a propose,
    a lease call) said a bare "database unavailable" with no hint, where the ORM's path
    named the missing database and the fix; one set of rules now (``driver_errors``)."""
    postgres_answers()
    missing = manager(f"{PG_HOST_URL}/wm_no_such_database_{uuid.uuid4().hex[:6]}")
    refused = manager("postgresql+psycopg://nobody:hunter2@127.0.0.1:1/none")
    try:
        for call in (lambda wm: wm.propose("test.simple", {}), lambda wm: wm.agent.checkout("a")):
            with pytest.raises(DatabaseMissing) as caught:
                call(missing)
            assert "createdb" in str(caught.value.hint), caught.value
            with pytest.raises(Unavailable) as down:
                call(refused)
            assert "server running" in str(down.value.hint), down.value
            assert "hunter2" not in str(down.value.hint) + down.value.message
    finally:
        missing.close()
        refused.close()
