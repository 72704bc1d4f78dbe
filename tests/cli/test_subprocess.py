"""The real ``.venv/bin/workmanager`` executable: exit codes, stderr, JSON on stdout.

One group on a temporary SQLite file (with the embedded SQLite broker, so announcements go
through Celery for real), one on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import truncate_all
from workmanager import Registry, Settings, WorkManager
from workmanager.db.session import Database
from workmanager.demo.types import register

EXE = Path(sys.executable).with_name("workmanager")
ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = '{"company": "Acme", "questions": ["a", "b"]}'

Run = Callable[..., subprocess.CompletedProcess[str]]


def runner(database_url: str, tmp_path: Path) -> Run:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")},
        "WORK_MANAGER_DATABASE_URL": database_url,
        "WORK_MANAGER_BROKER_URL": f"sqla+sqlite:///{tmp_path}/broker.db",
        "WORK_MANAGER_ORDER_TYPES": "workmanager.demo.types",
        "WORK_MANAGER_METRICS_DRIVER": "null",
    }

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(EXE), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == code, (args, done.stdout, done.stderr)
        return done

    return run


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def library(database_url: str) -> WorkManager:
    registry = Registry()
    register(registry)
    settings = Settings(database_url=database_url, lease_backend="database", metrics_driver="null")
    return WorkManager(settings, registry=registry)


def test_console_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/wm.db"
    run = runner(url, tmp_path)
    run("db", "upgrade")
    seeded = as_json(
        run(
            "dev", "seed", "--type", "demo.research", "--count", "3", "--payload", PAYLOAD, "--json"
        )
    )
    assert len(seeded["created"]) == 3
    assert as_json(run("orders", "list", "--json"))["meta"]["total"] == 3

    wm = library(url)
    try:
        leases = [wm.agent.checkout(agent) for agent in ("a1", "a1", "a2")]
        assert all(leases)
        refused = run("leases", "release", code=2)
        assert "no lease selector" in refused.stderr and not refused.stdout
        # reclaim alone takes the expired leases (SPEC §13): none has expired yet
        assert "no lease matched" in run("leases", "reclaim").stdout
        before = as_json(run("items", "list", "--json"))
        dry = as_json(run("leases", "release", "--agent", "a1", "--dry-run", "--json"))
        assert dry["counts"] == {"released": 2}
        assert as_json(run("items", "list", "--json")) == before
        done = as_json(run("leases", "release", "--agent", "a1", "--json"))
        assert done["counts"] == {"released": 2} and not done["dry_run"]
        check = as_json(run("ops", "check", "--json"))
        assert check["ok"] and check["leases"]["held"] == 1 and check["items"]["queued"] == 5
        # the announcements went to the broker (the embedded SQLite transport)
        assert (tmp_path / "broker.db").exists()
    finally:
        wm.close()

    missing = run("orders", "show", "00000000-0000-0000-0000-000000000000", code=1)
    assert missing.stderr.startswith("error [not_found]:")
    run("orders", "show", "nope", code=2)
    tail = [
        json.loads(line) for line in run("ops", "tail", "-n", "3", "--json").stdout.splitlines()
    ]
    assert [e["event"] for e in tail] == ["lease_released", "lease_released", "requeued"]
    assert tail[0]["id"] < tail[1]["id"] < tail[2]["id"]  # newest last
    assert as_json(run("ops", "prune", "--older-than", "90d", "--json"))["orders"] == 0
    assert "--force" in run("dev", "reset", code=2).stderr
    assert as_json(run("dev", "reset", "--force", "--json"))["deleted"]["work_orders"] == 3
    source = run("make", "order-type", "shop.restock").stdout
    compile(source, "shop_restock.py", "exec")


def test_ops_check_exits_non_zero_when_the_database_is_unreachable(tmp_path: Path) -> None:
    run = runner("postgresql+psycopg://nobody@127.0.0.1:1/none", tmp_path)
    report = as_json(run("ops", "check", "--json", code=1))
    assert report["ok"] is False and report["components"]["database"].startswith("down")


@pytest.mark.postgres
def test_console_on_postgres(pg_url: str, tmp_path: Path) -> None:
    db = Database(pg_url)
    truncate_all(db)
    db.dispose()
    run = runner(pg_url, tmp_path)
    run("dev", "seed", "--type", "demo.research", "--count", "2", "--payload", PAYLOAD)
    wm = library(pg_url)
    try:
        lease = wm.agent.checkout("pg-agent")
        assert lease is not None
        extended = as_json(
            run("leases", "extend", "--order", str(lease.order_id), "--seconds", "120", "--json")
        )
        assert extended["counts"] == {"extended": 1}
        wm.agent.heartbeat(lease)  # the holder's lease is still good
        reclaimed = as_json(run("leases", "reclaim", "--type", "demo.research", "--json"))
        assert reclaimed["counts"] == {"requeued": 1}
    finally:
        wm.close()
    check = as_json(run("ops", "check", "--json"))
    # the reclaimed order stays in_progress: reclaim changes the item only (SPEC §3.1)
    assert check["ok"] and check["orders"] == {"queued": 1, "in_progress": 1}
    assert check["leases"]["held"] == 0
    assert ROOT.exists()


def test_output_that_cannot_be_written_and_arguments_that_are_not_text(tmp_path: Path) -> None:
    """Found by a scripting pass: stdout on a full disk printed a traceback; ``tokens
    create`` then stored a token nobody saw (also with stdout closed, exit 0); an argument
    of bytes that are not UTF-8 reached the database (a UnicodeEncodeError traceback); a
    C locale made ``nö`` such bytes too."""
    url = f"sqlite:///{tmp_path}/wm.db"
    run = runner(url, tmp_path)
    run("db", "upgrade")
    env = {**os.environ, "WORK_MANAGER_DATABASE_URL": url, "WORK_MANAGER_METRICS_DRIVER": "null"}

    def shell(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", line], env=env, cwd=tmp_path, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    missing = "00000000-0000-0000-0000-000000000000"
    for line, said in (
        (f"{EXE} orders list --json > /dev/full", "cannot write the output: No space left"),
        (f"{EXE} orders show {missing} --json > /dev/full", "error [not_found]"),
        (f"{EXE} tokens create --name fj --scopes view --json > /dev/full", "not created"),
        (f"{EXE} tokens create --name full --scopes view > /dev/full", "it was not created"),
        (f"{EXE} tokens create --name shut --scopes view >&-", "it was not created"),
    ):
        done = shell(line)
        assert done.returncode == 1, (line, done.stderr)
        assert "Traceback" not in done.stderr and said in done.stderr, (line, done.stderr)
    assert as_json(run("tokens", "list", "--json")) == []  # no token lost unseen
    done = shell(f"{EXE} orders list --type $'x\\xff' --json")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "usage_error"
    assert "is not UTF-8 text" in done.stderr
    # a path is any bytes the file system takes; one it refuses is said with its name
    done = shell(f"{EXE} make order-type my.thing -o $'caf\\xe9.py'")
    assert done.returncode == 0, done.stderr
    assert b"caf\xe9.py" in os.listdir(os.fsencode(tmp_path))
    c_locale = "LC_ALL=C PYTHONCOERCECLOCALE=0 PYTHONUTF8=0"
    done = shell(f"{c_locale} {EXE} tokens create --name 'nö' --scopes view --json")
    assert done.returncode == 0 and json.loads(done.stdout)["name"] == "nö", done.stderr


#: Ctrl-C arriving while the console's modules load: an import finder raises it as the
#: interrupt would, at the module named first (a real SIGINT's timing is a race).
INTERRUPTED_WHILE_LOADING = """
import sys
at = sys.argv.pop(1)
sys.argv = ["workmanager", *sys.argv[1:]]

class Interrupting:
    def find_spec(self, name, path=None, target=None):
        if name == at:
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, Interrupting())
from workmanager.cli import main
main(["--help"])
"""


# workmanager.order_types: the package's own ``__init__`` imported it (a review: the first
# 0.1 s of a command were still a traceback); now only the modules asked for load.
@pytest.mark.parametrize("at", ["workmanager.cli.app", "workmanager.order_types"])
@pytest.mark.parametrize("args", [(), ("orders", "list", "--json")])
def test_ctrl_c_while_the_command_line_loads_is_one_line(args: tuple[str, ...], at: str) -> None:
    """Ctrl-C in the most of a second ``workmanager`` spends importing printed a
    ``KeyboardInterrupt`` traceback: now the line every interrupted command prints, 130,
    and under ``--json`` the envelope an interrupted command prints on stdout."""
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_LOADING, at, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 130
    assert done.stderr == "error [aborted]: interrupted (Ctrl-C)\n"
    if args:
        from workmanager.cli.render import error_body
        from workmanager.errors import Aborted

        said = error_body(Aborted("interrupted (Ctrl-C)", hint=""))
        assert json.loads(done.stdout) == said  # as report_interrupt(as_json=True) prints it
    else:
        assert done.stdout == ""
