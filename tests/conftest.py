"""Shared fixtures: real PostgreSQL and Redis on loopback, and WorkManager factories.

Tests that need a server skip with a reason when it is absent locally, and fail when the
``CI`` variable is set (CI must not silently skip the PostgreSQL or Redis half).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.dispatch import RecordingDispatcher
from workmanager import Registry, Settings, WorkManager
from workmanager.db.models import Base
from workmanager.db.session import Database
from workmanager.leases.keyed import StoreLeaseBackend
from workmanager.leases.memory import MemoryLeaseStore
from workmanager.metrics.base import Metrics
from workmanager.metrics.simple import MemoryDriver

pytest_plugins = ["tests.support.api_fixtures", "tests.support.parallel", "tests.support.own_redis"]

PG_ADMIN_DSN = os.environ.get("WM_TEST_PG_ADMIN", "host=127.0.0.1 user=postgres dbname=postgres")
PG_DB = os.environ.get("WM_TEST_PG_DB", f"wm_test_{os.getpid()}")
PG_HOST_URL = os.environ.get("WM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("WM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def need(server: str, reason: str) -> None:
    """Skip locally, fail in CI, when a server the test needs does not answer."""
    message = f"{server} is not reachable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so this is a failure, not a skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{PG_DB}"')
    except Exception as exc:
        need("PostgreSQL", str(exc))
    url = f"{PG_HOST_URL}/{PG_DB}"
    db = Database(url)
    db.create_all()  # the models' schema, recorded as the migrations' head
    db.dispose()
    yield url
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
    except Exception:
        pass


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        need("Redis", str(exc))
    return REDIS_URL


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Redis Cluster of our own (three masters with replicas), shared by the session's
    tests that need one and torn down at the end (``tests/support/redis_cluster.py``)."""
    from tests.support.redis_cluster import started

    cluster = started(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


def truncate_all(db: Database) -> None:
    tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path}/wm.db"


WMFactory = Callable[..., WorkManager]


@pytest.fixture
def make_wm(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[WMFactory]:
    """Build WorkManagers: ``make_wm(db="sqlite"|"postgres", backend="database"|"memory"|
    "redis"|"redis-cluster", **settings)``. Each database has one path (PostgreSQL its SQL
    path, SQLite the ORM's). Each call gets metrics in memory and a recording dispatcher;
    PostgreSQL is truncated and Redis keys under a per-test prefix are used."""
    built: list[WorkManager] = []
    prefix = f"wmtest:{uuid.uuid4().hex[:8]}:"

    def factory(
        db: str = "sqlite",
        backend: str = "memory",
        registry: Registry | None = None,
        **overrides: Any,
    ) -> WorkManager:
        if db == "postgres":
            url = request.getfixturevalue("pg_url")
        else:
            url = f"sqlite:///{tmp_path}/wm.db"
        fields: dict[str, Any] = {
            "database_url": url,
            "lease_backend": backend,
            "redis_prefix": prefix,
            "metrics_driver": "null",
        }
        if backend == "redis":
            fields["redis_url"] = request.getfixturevalue("redis_url")
        elif backend == "redis-cluster":
            fields |= {"lease_backend": "redis", "redis_cluster": True}
            fields["redis_url"] = request.getfixturevalue("redis_cluster").url
        settings = Settings(**{**fields, **overrides})
        database = Database(url)
        if not built or db == "sqlite":
            if db == "postgres":
                truncate_all(database)
            else:
                database.create_all()
        leases = None
        if backend == "memory":
            leases = StoreLeaseBackend(
                MemoryLeaseStore(),
                "memory",
                settings.max_leases_per_agent,
                settings.max_leases_per_type,
                settings.max_leases_per_tenant,
            )
        wm = WorkManager(
            settings,
            registry=registry or Registry(),
            database=database,
            metrics=Metrics(MemoryDriver(), "work_manager"),
            dispatcher=RecordingDispatcher(),
            leases=leases,
        )
        built.append(wm)
        return wm

    yield factory
    for wm in built:
        wm.close()


DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
#: Every store (SQLite, PostgreSQL) with every lock backend (the row itself, Redis, memory), and
#: Redis Cluster on PostgreSQL: the contract suite runs once per pair.
BACKENDS = [
    pytest.param(("sqlite", "database"), id="sqlite-database"),
    pytest.param(("sqlite", "redis"), id="sqlite-redis", marks=pytest.mark.redis),
    pytest.param(("sqlite", "memory"), id="sqlite-memory"),
    pytest.param(("postgres", "database"), id="postgres-database", marks=pytest.mark.postgres),
    pytest.param(
        ("postgres", "redis"), id="postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis]
    ),
    pytest.param(("postgres", "memory"), id="postgres-memory", marks=pytest.mark.postgres),
    pytest.param(
        ("postgres", "redis-cluster"),
        id="postgres-redis-cluster",
        marks=[pytest.mark.postgres, pytest.mark.redis],
    ),
]


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over SQLite and PostgreSQL."""
    return str(request.param)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Parametrizes a test over every (database, lease backend) pair."""
    return tuple(request.param)  # type: ignore[return-value]
