"""``workmanager db upgrade`` builds the schema the models describe, on both databases,
and running it again changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from tests.support.types import Multi
from workmanager import AgentInfo, Registry, Settings, WorkManager
from workmanager.db.migrate import alembic_config, current, upgrade
from workmanager.db.models import Base
from workmanager.db.session import Database

AUDIT_TABLES = ("work_events", "work_provenance")


def schema_differences(db: Database) -> list[object]:
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # Expression-based indexes (the checkout index) cannot be reflected by autogenerate.
    return [d for d in diffs if "ix_work_items_checkout" not in str(d)]


def check(url: str) -> None:
    db = Database(url)
    upgrade(db)
    head = current(db)
    upgrade(db)  # idempotent
    assert current(db) == head == "0017"
    assert schema_differences(db) == []
    indexes = {i["name"]: i for i in inspect(db.engine).get_indexes("work_items")}
    assert indexes["ix_work_items_checkout"]["column_names"][-2:] == ["created_at", "id"]

    def audit_fks() -> list[int]:
        db.engine.dispose()  # SQLite: a pooled connection keeps the schema it first read
        return [len(inspect(db.engine).get_foreign_keys(t)) for t in AUDIT_TABLES]

    def hot_functions() -> list[str]:
        if db.dialect != "postgresql":
            return []
        with db.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT proname FROM pg_proc WHERE proname LIKE 'workmanager_%' ORDER BY 1")
            )
            return [r[0] for r in rows]

    functions = [
        "workmanager_put_part",
        "workmanager_release_order",
        "workmanager_start_order",
        "workmanager_submit_order",
    ]
    assert hot_functions() == (functions if db.dialect == "postgresql" else [])
    assert audit_fks() == [0, 0]  # 0003 dropped them; down and up again both work
    assert_delete_cascades(db)  # a checkout and a submit: the hot path on PostgreSQL
    command.downgrade(alembic_config(db), "0004")
    assert hot_functions() == (functions[2:] if db.dialect == "postgresql" else [])
    command.downgrade(alembic_config(db), "0002")
    assert audit_fks() == [2, 2] and current(db) == "0002" and hot_functions() == []
    upgrade(db)
    assert audit_fks() == [0, 0] and schema_differences(db) == []
    assert hot_functions() == (functions if db.dialect == "postgresql" else [])
    assert_delete_cascades(db)
    db.dispose()


def assert_delete_cascades(db: Database) -> None:
    """SPEC §3: deleting an order (here in plain SQL) deletes its items, events and
    provenance — by foreign key for items, by the trigger of 0003 for the audit rows."""
    wm = WorkManager(
        Settings(database_url=db.url, metrics_driver="null"),
        registry=Registry([Multi()]),
        database=db,
    )
    order_id = wm.propose("test.multi", {"count": 2})
    lease = wm.agent.checkout(AgentInfo(id="a-1"), order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"x": 1})
    counts = "SELECT (SELECT count(*) FROM {t} WHERE order_id = :o)"
    tables = ("work_items", "work_events", "work_provenance")
    o = order_id.hex if db.dialect == "sqlite" else order_id
    with db.engine.begin() as conn:
        before = [conn.execute(text(counts.format(t=t)), {"o": o}).scalar() for t in tables]
        conn.execute(text("DELETE FROM work_orders WHERE id = :o"), {"o": o})
        after = [conn.execute(text(counts.format(t=t)), {"o": o}).scalar() for t in tables]
    assert all(n and n > 0 for n in before), before
    assert after == [0, 0, 0]


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_deleting_an_order_deletes_its_audit_rows(make_wm, database) -> None:
    """The same on a schema built from the models (``create_all``), as tests and
    ``Database.create_all`` build it."""
    assert_delete_cascades(make_wm(db=database, backend="database").db)


def test_upgrade_on_sqlite(tmp_path) -> None:
    check(f"sqlite:///{tmp_path}/m.db")


@pytest.mark.postgres
def test_upgrade_on_postgres(fresh_pg: str) -> None:
    check(fresh_pg)


def test_cli_db_upgrade(tmp_path) -> None:
    env = {"WORK_MANAGER_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db", "PATH": "/usr/bin:/bin"}
    cli = str(Path(sys.executable).parent / "workmanager")
    run = subprocess.run(
        [cli, "db", "upgrade"], env=env, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert "0017" in run.stdout


@pytest.mark.parametrize("database", ["sqlite", pytest.param("pg", marks=pytest.mark.postgres)])
def test_orders_from_before_0009_take_their_items_tenant(database, tmp_path, request) -> None:
    """Found by an isolation pass: 0009 left the orders of before it without a tenant while
    their items kept the one the payload named, so a tenant's token got 404 for the order
    yet leased, read and submitted its items. 0014 gives such an order its items' tenant
    (one tenant among them all; several, or some without: none, as before)."""
    url = request.getfixturevalue("fresh_pg") if database == "pg" else f"sqlite:///{tmp_path}/t.db"
    db = Database(url)
    upgrade(db, "0013")
    wm = WorkManager(
        Settings(database_url=url, metrics_driver="null"),
        registry=Registry([Multi()]),
        database=db,
    )
    made = {
        name: wm.propose("test.multi", {"count": 2}, tenant_id=tenant)
        for name, tenant in (("one", "acme"), ("mixed", "acme"), ("partly", "acme"), ("none", None))
    }
    key = (lambda o: o.hex) if db.dialect == "sqlite" else (lambda o: o)
    with db.engine.begin() as conn:  # as code before 0009 left them
        conn.execute(text("UPDATE work_orders SET tenant_id = NULL"))
        mixed, partly = key(made["mixed"]), key(made["partly"])
        first = "SELECT id FROM work_items WHERE order_id = :o ORDER BY id LIMIT 1"
        for order, value in ((mixed, "other"), (partly, None)):
            conn.execute(
                text(f"UPDATE work_items SET tenant_id = :t WHERE id = ({first})"),
                {"o": order, "t": value},
            )
    upgrade(db)
    assert current(db) == "0017"
    with db.engine.connect() as conn:
        tenants = {
            name: conn.execute(
                text("SELECT tenant_id FROM work_orders WHERE id = :o"), {"o": key(order)}
            ).scalar()
            for name, order in made.items()
        }
    assert tenants == {"one": "acme", "mixed": None, "partly": None, "none": None}
    db.dispose()


def index_definitions(db: Database) -> dict[str, str]:
    """Every index the database holds, by name, as the database itself defines it."""
    if db.dialect == "postgresql":
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    with db.engine.connect() as conn:
        return {name: " ".join((sql or "").split()) for name, sql in conn.execute(text(query))}


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_migrations_make_the_models_indexes(database, tmp_path, request) -> None:
    """``compare_metadata`` leaves out the checkout indexes (their expressions) and every
    index's ``WHERE``: a migration's index missing a column, or its partial condition
    narrowed, passed every test while every test database (``create_all``) had the models'.
    The definitions the database holds, after the migrations and after ``create_all``."""
    if database == "postgres":
        url = request.getfixturevalue("fresh_pg")
        db = Database(url)
        upgrade(db)
        migrated = index_definitions(db)
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        db.dispose()
        built = Database(url)
    else:
        db = Database(f"sqlite:///{tmp_path}/migrated.db")
        upgrade(db)
        migrated = index_definitions(db)
        db.dispose()
        built = Database(f"sqlite:///{tmp_path}/built.db")
    built.create_all()
    assert migrated == index_definitions(built)
    assert any("ix_work_items_checkout" in name for name in migrated)
    built.dispose()
