"""Database URLs and schemas a user got wrong, from the command line: one line with a
hint, never a driver's traceback (an adversarial pass found each of these printing one)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.cli.test_mistakes import DB_UPGRADE, Mistake, check, run
from workmanager.db import driver_errors
from workmanager.db.migrate import current, head, upgrade
from workmanager.db.session import Database
from workmanager.errors import SchemaOutdated


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    made = {"ready": tmp_path / "ready", "fresh": tmp_path / "fresh"}
    for path in made.values():
        path.mkdir()
    (made["ready"] / "notadb.db").write_text("these are not the bytes of a database\n")
    return made


def test_a_sqlite_url_that_names_no_database_file_says_so(dirs: dict[str, Path]) -> None:
    hint = "a SQLite database file this process can open and write"
    for target in (dirs["ready"] / "notadb.db", dirs["ready"]):  # another file, a directory
        url = {"WORK_MANAGER_DATABASE_URL": f"sqlite:///{target}"}
        for args in (("orders", "list"), ("db", "upgrade")):
            mistake = Mistake(args, "unavailable", hint, env=url)
            check(mistake, run(mistake, dirs))


def test_an_older_sqlite_schema_is_named_on_a_write_too() -> None:
    """SQLite says "table t has no column named c" for an INSERT into an older table (a
    read says "no such column"): both are a schema older than the code."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE work_orders (id TEXT)")
    with pytest.raises(sqlite3.OperationalError) as raised:
        conn.execute("INSERT INTO work_orders (id, tenant_id) VALUES ('a', 't')")
    error = driver_errors.translate(raised.value, operational=True)
    assert isinstance(error, SchemaOutdated) and error.hint == DB_UPGRADE


def test_db_upgrade_leaves_a_database_newer_code_migrated(dirs: dict[str, Path]) -> None:
    """A revision these migrations do not know: newer code migrated the database (a
    rolling deploy's older processes may run their upgrade): nothing is done, exit 0, and
    the line says so (was alembic's CommandError traceback)."""
    url = f"sqlite:///{dirs['ready']}/wm.db"
    db = Database(url)
    upgrade(db)
    with sqlite3.connect(dirs["ready"] / "wm.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0999'")
    mistake = Mistake(("db", "upgrade"), "", env={"WORK_MANAGER_DATABASE_URL": url})
    done = run(mistake, dirs)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    assert (
        f"database at revision 0999 (newer than this code's {head()}: "
        "migrated by newer code, left as it is)"
    ) in done.stdout.splitlines()
    assert current(db) == "0999"
    db.dispose()


def test_db_upgrade_makes_the_embedded_brokers_directory_too(tmp_path: Path) -> None:
    """A review pass: with the database elsewhere (``WORK_MANAGER_DATABASE_URL``) and the
    embedded broker (``./var/broker.db``), ``db upgrade`` made only the database's
    directory, and every worker then refused to start with the hint "run `workmanager db
    upgrade` first" — the step just run. It makes the broker's directory as well."""
    import os
    import subprocess

    from tests.cli.test_mistakes import EXE

    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env["WORK_MANAGER_DATABASE_URL"] = f"sqlite:///{tmp_path}/db/wm.db"
    env["WORK_MANAGER_METRICS_DRIVER"] = "null"
    done = subprocess.run(
        [str(EXE), "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "db" / "wm.db").is_file() and (tmp_path / "var").is_dir()
    # a directory that cannot be made names the setting, and nothing was done before it
    # (the schema was upgraded, the settings' record skipped, the line named neither)
    (tmp_path / "afile").touch()
    env["WORK_MANAGER_DATABASE_URL"] = f"sqlite:///{tmp_path}/other.db"
    env["WORK_MANAGER_BROKER_URL"] = f"sqla+sqlite:///{tmp_path}/afile/sub/broker.db"
    refused = subprocess.run(
        [str(EXE), "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith(
        "error [configuration_error]: cannot make the embedded broker's directory"
    ), refused.stderr
    assert "WORK_MANAGER_BROKER_URL" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "other.db").exists()
