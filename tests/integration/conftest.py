"""Fixtures of the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from ..conftest import PG_ADMIN_DSN, PG_HOST_URL


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own (dropped after it)."""
    name = f"wm_test_migrations_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        from ..conftest import need

        need("PostgreSQL", str(exc))
    yield f"{PG_HOST_URL}/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
