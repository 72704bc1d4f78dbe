"""The API suite's database and tokens, for every test directory (tests/api, tests/compat,
…), registered once by the root conftest (``pytest_plugins``).

Defined once on purpose: a fixture imported into a second conftest or test module is a
second definition, and a session fixture defined twice runs twice. This one drops and
recreates the database, so a second instance would drop the tokens every server of the
first was started with ("unknown bearer token" in whatever ran after it).
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.api.conftest import TOKENS, base_env, cli
from tests.conftest import PG_ADMIN_DSN
from workmanager import Registry, Settings, WorkManager
from workmanager.db.models import Base
from workmanager.db.session import Database
from workmanager.services.tokens import TokenService


@pytest.fixture(scope="session")
def api_db_url(pg_url: str) -> Iterator[str]:
    name = pg_url.rsplit("/", 1)[1] + "_api"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    db = Database(url)
    Base.metadata.create_all(db.engine)
    db.dispose()
    yield url
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def tokens(api_db_url: str) -> dict[str, str]:
    """``admin`` made by ``workmanager tokens create`` (the token alone on the last line),
    the others through the same service in-process (a CLI start per token is slow)."""
    done = cli(base_env(api_db_url), "tokens", "create", "--name", "admin", "--scopes", "admin")
    assert done.returncode == 0, done.stderr
    made = {"admin": done.stdout.strip().splitlines()[-1]}
    wm = WorkManager(Settings(database_url=api_db_url, metrics_driver="null"), registry=Registry())
    service = TokenService(wm.ctx)
    for name, (scopes, agent) in TOKENS.items():
        if name not in made:
            made[name] = service.create(name, scopes, agent)[0]
    wm.close()
    return made
