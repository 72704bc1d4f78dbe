"""The SQL files (workmanager/db/sql) and the migrations agree: a database built by the
migrations, run in order, has exactly the functions and triggers ``create_all`` makes
from the files — on real PostgreSQL and on SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from workmanager.db import sql
from workmanager.db.migrate import upgrade
from workmanager.db.session import Database

from ..conftest import PG_ADMIN_DSN, PG_HOST_URL

FUNCTIONS = """
SELECT p.proname, pg_get_functiondef(p.oid)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' ORDER BY p.proname
"""
TRIGGERS = """
SELECT t.tgname, pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE NOT t.tgisinternal AND c.relname LIKE 'work\\_%' ORDER BY t.tgname
"""


@pytest.fixture
def two_pg_databases() -> Iterator[tuple[str, str]]:
    names = [f"wm_test_sqlfiles_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
            for name in names:
                conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        from ..conftest import need

        need("PostgreSQL", str(exc))
    yield f"{PG_HOST_URL}/{names[0]}", f"{PG_HOST_URL}/{names[1]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _objects(db: Database, *queries: str) -> list[dict[str, str]]:
    with db.engine.connect() as conn:
        return [{str(k): str(v) for k, v in conn.execute(text(q))} for q in queries]


@pytest.mark.postgres
def test_postgres_migrations_make_what_functions_sql_says(two_pg_databases) -> None:
    migrated_url, created_url = two_pg_databases
    migrated, created = Database(migrated_url), Database(created_url)
    try:
        upgrade(migrated)
        created.create_all()
        by_migrations = _objects(migrated, FUNCTIONS, TRIGGERS)
        by_files = _objects(created, FUNCTIONS, TRIGGERS)
    finally:
        migrated.dispose()
        created.dispose()
    assert by_migrations == by_files
    functions, triggers = by_files
    # every section of the file is there, and nothing else
    assert set(functions) == {s.name for s in sql.sections("functions.sql")}
    assert set(triggers) == {"work_orders_delete_audit"}


def test_sqlite_migrations_make_what_sqlite_sql_says(tmp_path: Path) -> None:
    migrated = Database(f"sqlite:///{tmp_path / 'migrated.db'}")
    created = Database(f"sqlite:///{tmp_path / 'created.db'}")
    query = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
    try:
        migrated.allow_create()
        upgrade(migrated)
        created.create_all()
        [by_migrations] = _objects(migrated, query)
        [by_files] = _objects(created, query)
    finally:
        migrated.dispose()
        created.dispose()
    normalized = [{k: " ".join(v.split()) for k, v in d.items()} for d in (by_migrations, by_files)]
    assert normalized[0] == normalized[1]
    assert set(by_files) == {s.name for s in sql.sections("sqlite.sql")}
