"""A new user's mistakes, run as the user runs them: the real ``workmanager`` executable in
a temporary directory with only the ``WORK_MANAGER_*`` variables a case sets.

Every mistake exits non-zero with ``error [<code>]: …`` on the first line of stderr (the
details and a hint a person can act on under it) and never a traceback; a command other
than ``db upgrade`` never leaves an empty database behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_DSN, PG_HOST_URL, need
from workmanager import Registry, Settings, WorkManager
from workmanager.db.migrate import upgrade
from workmanager.db.session import Database
from workmanager.demo.types import register

EXE = Path(sys.executable).with_name("workmanager")
DB_UPGRADE = "run `workmanager db upgrade`"
UNKNOWN = "00000000-0000-0000-0000-000000000000"
COMPANY = '{"company": "Acme"}'


@dataclass
class Mistake:
    """One command line a user got wrong, and what it must answer."""

    args: tuple[str, ...]
    code: str  # the error code on the first line
    hint: str | None = None  # a text the hint line must contain
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "ready"  # "ready": a database at head; "fresh": an empty directory
    exit_code: int = 1
    stdout_json: bool = False  # --json: the error envelope on stdout too
    shows: str | None = None  # a text stderr must contain (details)


def mistakes(order_id: str) -> list[Mistake]:
    handler_hint = "expected module:function"
    payload_hint = "see `workmanager dev seed --help`"
    return [
        # before `workmanager db upgrade`, in a directory with no database
        Mistake(("orders", "list"), "unavailable", DB_UPGRADE, cwd="fresh"),
        Mistake(("tokens", "revoke", "nobody"), "unavailable", DB_UPGRADE, cwd="fresh"),
        Mistake(("orders", "list"), "unavailable", DB_UPGRADE, cwd="empty-file"),
        Mistake(("serve", "--port", "1"), "unavailable", DB_UPGRADE, cwd="fresh"),
        Mistake(("mcp", "--transport", "http", "--port", "1"), "unavailable", DB_UPGRADE,
                cwd="fresh"),
        # bad database URLs
        Mistake(
            ("orders", "list"),
            "configuration_error",
            "expected sqlite:///",
            env={"WORK_MANAGER_DATABASE_URL": "not a url"},
        ),
        Mistake(
            ("orders", "list"),
            "unavailable",
            "is the server running",
            env={"WORK_MANAGER_DATABASE_URL": "postgresql+psycopg://u:hunter2@127.0.0.1:1/x"},
        ),
        # agents: an unknown type, handlers of the wrong form
        Mistake(("agent", "--type", "nope", "--handler", "x:y"), "unknown_order_type",
                "known types: 'demo.research'"),
        Mistake(("agent", "--type", "demo.research", "--handler", "nocolon"),
                "configuration_error", handler_hint),
        Mistake(("agent", "--type", "demo.research", "--handler", "no_such_pkg.mod:fn"),
                "configuration_error", handler_hint),
        # payloads and values
        Mistake(("dev", "seed", "--type", "demo.research", "--payload", "{bad"), "usage_error",
                payload_hint, exit_code=2),
        Mistake(("dev", "seed", "--type", "demo.nope"), "unknown_order_type",
                "known types: 'demo.research'"),
        Mistake(("dev", "seed", "--type", "demo.research", "--payload", "{}"),
                "validation_failed",
                shows="  payload: 'company' is a required property (required)"),
        Mistake(("dev", "seed", "--type", "demo.research", "--payload", "{}", "--json"),
                "validation_failed", stdout_json=True),
        # tokens
        Mistake(("tokens", "revoke", "nobody"), "not_found"),
        Mistake(("tokens", "create", "--name", "t", "--scopes", "view,root"),
                "validation_failed"),
        # orders
        Mistake(("orders", "show", UNKNOWN), "not_found"),
        Mistake(("orders", "show", "not-a-uuid"), "usage_error", "--help", exit_code=2),
        Mistake(("orders", "retry", order_id), "illegal_state_transition",
                shows="from: queued"),
        # orders create sends to the broker: the embedded one before `db upgrade`, one not there
        Mistake(("orders", "create", "--type", "demo.research", "--payload", COMPANY),
                "unavailable", DB_UPGRADE, cwd="fresh"),
        Mistake(("orders", "create", "--type", "demo.research", "--payload", COMPANY),
                "unavailable", "check WORK_MANAGER_BROKER_URL",
                env={"WORK_MANAGER_BROKER_URL": "redis://:hunter2@127.0.0.1:1/0"},
                shows="broker_url: redis://:***@127.0.0.1:1/0"),
        # settings
        Mistake(("orders", "list"), "configuration_error",
                env={"WORK_MANAGER_LEASE_TTL_SECONDS": "abc"},
                shows="WORK_MANAGER_LEASE_TTL_SECONDS"),
        Mistake(("orders", "list"), "configuration_error",
                env={"WORK_MANAGER_CONFIG": "wm.toml"}, shows="did you mean"),
    ]  # fmt: skip


def run(mistake: Mistake, dirs: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    cwd = dirs[mistake.cwd]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env["WORK_MANAGER_ORDER_TYPES"] = "workmanager.demo.types"
    env["WORK_MANAGER_METRICS_DRIVER"] = "null"
    if mistake.cwd == "ready":
        env["WORK_MANAGER_DATABASE_URL"] = f"sqlite:///{cwd}/wm.db"
    env.update(mistake.env)
    return subprocess.run(
        [str(EXE), *mistake.args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def check(mistake: Mistake, done: subprocess.CompletedProcess[str]) -> None:
    said = (mistake.args, done.returncode, done.stdout, done.stderr)
    assert done.returncode == mistake.exit_code, said
    assert "Traceback" not in done.stdout + done.stderr, said
    assert "<OrderState" not in done.stderr and "<ItemState" not in done.stderr, said
    lines = done.stderr.splitlines()
    assert lines and lines[0].startswith(f"error [{mistake.code}]: "), said
    hints = [line for line in lines if line.startswith("hint: ")]
    if mistake.hint is not None:
        assert hints and mistake.hint in hints[0], said
    if mistake.shows is not None:
        assert mistake.shows in done.stderr, said
    if mistake.stdout_json:
        error = json.loads(done.stdout)["error"]
        assert error["code"] == mistake.code, said
        assert error["details"] and all(
            set(d) == {"path", "message", "validator"} for d in error["details"]
        ), said
    assert "hunter2" not in done.stdout + done.stderr  # a password is never shown


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    made = {name: tmp_path / name for name in ("ready", "fresh", "empty-file")}
    for path in made.values():
        path.mkdir()
    (made["empty-file"] / "var").mkdir()
    (made["empty-file"] / "var" / "workmanager.db").touch()
    (made["ready"] / "wm.toml").write_text("lease_ttl_second = 30\n")
    yield made


def test_every_mistake_is_one_error_line_with_a_hint(dirs: dict[str, Path]) -> None:
    db = Database(f"sqlite:///{dirs['ready']}/wm.db")
    upgrade(db)
    registry = Registry()
    register(registry)
    settings = Settings(database_url=db.url, lease_backend="database", metrics_driver="null")
    wm = WorkManager(settings, registry=registry, database=db)
    try:
        order_id = str(wm.propose("demo.research", {"company": "Acme", "questions": ["q"]}))
    finally:
        wm.close()
    cases = mistakes(order_id)
    assert len(cases) >= 15
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda m: run(m, dirs), cases))
    for mistake, done in zip(cases, results, strict=True):
        check(mistake, done)
    # nothing but `db upgrade` creates a database: the fresh directory is still empty
    assert list(dirs["fresh"].iterdir()) == []


def test_postgres_mistakes_name_the_fix(dirs: dict[str, Path]) -> None:
    """A database that does not exist, and one that exists with no schema."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:
        need("PostgreSQL", str(exc))
    empty = f"wm_t14_empty_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{empty}"')
        try:
            cases = [
                Mistake(
                    ("orders", "list"),
                    "unavailable",
                    "createdb",
                    env={"WORK_MANAGER_DATABASE_URL": f"{PG_HOST_URL}/wm_t14_no_such_db"},
                ),
                Mistake(
                    ("ops", "tail"),
                    "unavailable",
                    DB_UPGRADE,
                    env={"WORK_MANAGER_DATABASE_URL": f"{PG_HOST_URL}/{empty}"},
                ),
                # the first command a newcomer runs on PostgreSQL (was a traceback)
                Mistake(
                    ("db", "upgrade"),
                    "unavailable",
                    "createdb",
                    env={"WORK_MANAGER_DATABASE_URL": f"{PG_HOST_URL}/wm_t14_no_such_db"},
                ),
                Mistake(
                    ("db", "upgrade"),
                    "unavailable",
                    "is the server running",
                    env={
                        "WORK_MANAGER_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x"
                    },
                ),
            ]
            for mistake in cases:
                check(mistake, run(mistake, dirs))
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)')


def test_ops_check_names_the_database_it_uses(dirs: dict[str, Path]) -> None:
    """Run from a directory with no database, ``ops check`` says which file it looked for
    (the embedded default, made absolute) and how to create it, and creates nothing; a
    server URL is shown with its password masked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env["WORK_MANAGER_METRICS_DRIVER"] = "null"
    fresh = dirs["fresh"]

    def ops_check(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(EXE), "ops", "check", *args],
            env={**env, **extra},
            cwd=fresh,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = ops_check()
    assert done.returncode == 1, (done.stdout, done.stderr)
    expected = f"sqlite:///{fresh.resolve()}/var/workmanager.db"
    assert done.stdout.splitlines()[0] == f"database: {expected}", done.stdout
    assert DB_UPGRADE in done.stdout and "Traceback" not in done.stdout + done.stderr
    # the reason names the error's code, printed as text (not eaten as table markup), and
    # never a Python class name
    assert "down: [unavailable] no database at " in done.stdout, done.stdout
    assert "DatabaseMissing" not in done.stdout
    report = json.loads(ops_check("--json").stdout)
    assert report["database_url"] == expected and report["ok"] is False
    assert list(fresh.iterdir()) == []  # nothing created
    url = "postgresql+psycopg://wm:hunter2@127.0.0.1:1/wm"
    shown = ops_check("--json", WORK_MANAGER_DATABASE_URL=url)
    assert json.loads(shown.stdout)["database_url"] == "postgresql+psycopg://wm:***@127.0.0.1:1/wm"
    assert "hunter2" not in shown.stdout + shown.stderr


def test_a_broker_that_is_down_is_a_warning_line_not_a_traceback(tmp_path: Path) -> None:
    """A command whose change is stored, then announced to a broker that is not there (a
    mistyped WORK_MANAGER_BROKER_URL): it succeeds, and the lost announcement is one
    ``warning:`` line (the sweep recovers it), not the library's logged traceback."""
    db = Database(f"sqlite:///{tmp_path}/wm.db")
    upgrade(db)
    db.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env.update(
        WORK_MANAGER_DATABASE_URL=db.url,
        WORK_MANAGER_BROKER_URL="redis://127.0.0.1:1/0",
        WORK_MANAGER_ORDER_TYPES="workmanager.demo.types",
        WORK_MANAGER_METRICS_DRIVER="null",
    )
    done = subprocess.run(
        [str(EXE), "dev", "seed", "--type", "demo.research", "--payload", COMPANY, "--count", "1",
         "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["created"]) == 1
    assert "Traceback" not in done.stderr, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.strip()]
    assert warnings and all(line.startswith("warning: could not send ") for line in warnings)
    assert "(OperationalError: " in warnings[0], warnings


@pytest.mark.parametrize(
    ("missing", "args", "extra"),
    [
        ("uvicorn", ("serve",), "api"),
        ("fastapi", ("serve",), "api"),
        ("mcp", ("mcp",), "mcp"),
        ("uvicorn", ("mcp", "--transport", "http"), "api"),
    ],
)
def test_a_command_whose_extra_is_not_installed_names_it(
    dirs: dict[str, Path], missing: str, args: tuple[str, ...], extra: str
) -> None:
    """On a plain install (the package ``missing`` cannot be imported), ``serve`` and
    ``mcp`` say which extra to install, in one line (was a ModuleNotFoundError traceback)."""
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        f"from workmanager.cli import main\nmain({list(args)!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=dirs["ready"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[0].startswith("error [configuration_error]: "), done.stderr
    assert f"pip install 'workmanager[{extra}]'" in done.stderr
