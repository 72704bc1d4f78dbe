"""What a worker process loads: the Celery app, its tasks and the agent consumer import
neither the web, console and MCP adapters nor code a worker never runs (issue 18), and
the start-up schema check loads Alembic only when the schema is not at the head.

Each case runs in a fresh interpreter, where ``sys.modules`` is the process's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tasks.runtime import VERSION_TABLE, shipped_heads
from workmanager.db import migrate
from workmanager.db.session import Database

ROOT = Path(__file__).resolve().parents[2]
#: Modules a control worker or an agent consumer never uses on its way (with a Redis
#: broker and order types without schemas).
NOT_IN_A_WORKER = (
    "fastapi",
    "starlette",
    "uvicorn",
    "jinja2",
    "rich",
    "alembic",
    "mako",
    "jsonschema",
    "kombu.transport.sqlalchemy",
    "workmanager.api",
    "workmanager.ui",
    "workmanager.mcp",
    "workmanager.cli",
)

#: The start-up check, as the worker of the project app runs it (``worker_init``).
READY = (
    "from types import SimpleNamespace\nfrom tasks.app import app\n"
    "from tasks.runtime import _ready_to_work\n_ready_to_work(sender=SimpleNamespace(app=app))\n"
)


def run_python(code: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env |= {"WORK_MANAGER_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    # The embedded broker beside the database, not in the checkout's ./var (which a fresh
    # clone does not have: the start-up check refuses a missing broker directory).
    env["WORK_MANAGER_BROKER_URL"] = f"sqla+{database_url}"
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def loaded(names: tuple[str, ...]) -> str:
    return f"import json, sys; print(json.dumps([m for m in {list(names)!r} if m in sys.modules]))"


def test_the_worker_modules_import_no_adapter_and_nothing_a_worker_never_runs(
    tmp_path: Path,
) -> None:
    code = "import tasks, tasks.orders, tasks.beat, workers.agent\n"
    done = run_python(code + loaded(NOT_IN_A_WORKER), f"sqlite:///{tmp_path}/wm.db")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_start_up_check_passes_a_schema_at_head_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/wm.db"
    db = Database(url)
    db.create_all()
    db.dispose()
    code = READY
    done = run_python(code + loaded(("alembic",)), url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_start_up_check_still_refuses_an_older_schema(tmp_path: Path) -> None:
    """Not at the head: Alembic decides, as before (refused, one line, exit 1)."""
    url = f"sqlite:///{tmp_path}/wm.db"
    db = Database(url)
    migrate.upgrade(db, "0009")
    db.dispose()
    done = run_python(READY, url)
    assert done.returncode == 1
    assert done.stderr.startswith("error [schema_outdated]: ")
    assert "run `workmanager db upgrade`" in done.stderr


def test_the_start_up_check_refuses_a_database_that_does_not_exist(tmp_path: Path) -> None:
    """A worker started where there is no database (another directory, or before ``db
    upgrade``) stops with one line and its hint instead of starting to spin on it; it
    creates no file."""
    url = f"sqlite:///{tmp_path}/var/wm.db"
    done = run_python(READY, url)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"error [unavailable]: no database at {tmp_path}/var/wm.db\n")
    assert "hint: run `workmanager db upgrade`" in done.stderr
    assert "Traceback" not in done.stderr and list(tmp_path.iterdir()) == []


def test_the_heads_read_without_alembic_are_alembics() -> None:
    assert shipped_heads() == frozenset(migrate.scripts().get_heads())
    assert VERSION_TABLE == migrate.VERSION_TABLE


def test_the_agent_reports_a_domain_error_without_a_traceback(tmp_path: Path) -> None:
    """The console's renderer is imported only to report the error."""
    code = (
        "import sys\nfrom workers.agent import run\n"
        "sys.exit(run(['--type', 'no.such', '--handler', 'workers.examples:research']))\n"
    )
    done = run_python(code, f"sqlite:///{tmp_path}/wm.db")
    assert done.returncode == 1
    assert done.stderr.startswith("error [unknown_order_type]: unknown order type 'no.such'")
    assert "Traceback" not in done.stderr


def test_the_package_root_and_the_http_client_load_no_database_layer(tmp_path: Path) -> None:
    """An agent on the HTTP client (``from workmanager.client import WorkClient``) and code
    that only names the public types (``from workmanager import OrderType``) load neither
    SQLAlchemy nor a database driver: ``WorkManager`` is imported on first use (it was
    imported with the package, a third of a second and ~25 MiB)."""
    code = (
        "import sys, json\n"
        "from workmanager import OrderType, ItemSpec, Diff\n"
        "from workmanager.client import WorkClient\n"
        "names = ('sqlalchemy', 'psycopg', 'sqlite3', 'workmanager.db')\n"
        "held = [m for m in names if m in sys.modules]\n"
        "import workmanager\n"
        "assert workmanager.WorkManager.__name__ == 'WorkManager'\n"
        "print(json.dumps(held))\n"
    )
    done = run_python(code, f"sqlite:///{tmp_path}/wm.db")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_start_up_check_refuses_settings_no_task_could_run_with(tmp_path: Path) -> None:
    """An order-type module that does not import (or raises as it is imported): the
    control worker said ``ready``, then every create task it took failed on building its
    WorkManager and the proposal was lost. Now it stops at start-up, one line, exit 1;
    a module whose own code raised gets its traceback logged once, above the line."""
    url = f"sqlite:///{tmp_path}/wm.db"
    db = Database(url)
    db.create_all()
    db.dispose()
    (tmp_path / "raising_types.py").write_text("raise RuntimeError('the module broke')\n")
    start = f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
    start += READY
    for modules, said in (
        ("no_such_types_module", "error [configuration_error]: WORK_MANAGER_ORDER_TYPES: cannot"),
        ("raising_types", "error [configuration_error]: WORK_MANAGER_ORDER_TYPES: importing"),
    ):
        env_code = f"import os; os.environ['WORK_MANAGER_ORDER_TYPES'] = {modules!r}\n"
        done = run_python(env_code + start, url)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.splitlines()
        error = [line for line in lines if line.startswith("error [")]
        assert len(error) == 1 and error[0].startswith(said), done.stderr
        assert ("Traceback" in done.stderr) == (modules == "raising_types"), done.stderr


def test_the_start_up_check_refuses_what_it_does_not_know_rather_than_start(
    tmp_path: Path,
) -> None:
    """An error no translation knows (here: the deployment check raising a plain
    exception) let the worker say ``ready`` (Celery ignores what a signal handler raises)
    and take messages each task failed on: it stops, its traceback logged, one line."""
    url = f"sqlite:///{tmp_path}/wm.db"
    db = Database(url)
    db.create_all()
    db.dispose()
    code = (
        "import workmanager.deployment as d\n"
        "def boom(*a, **k): raise RuntimeError('something new')\n"
        "d.check = boom\n"
    ) + READY
    done = run_python(code, url)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == "error [internal_error]: the start-up check failed: RuntimeError: something new"


def test_a_hosts_own_worker_is_not_checked_as_workmanagers(tmp_path: Path) -> None:
    """The review of an in-process worker test: the start-up hooks are connected for
    every Celery app in the process, and a host's own worker (its app, its ``celery``
    queue) in a process that had imported ``tasks.runtime`` was refused ("-Q celery: no
    workmanager task is sent to this queue", exit 1) and its settings checked as ours.
    Only the project app's workers and beat are."""
    url = f"sqlite:///{tmp_path}/nowhere/wm.db"  # no database: ours would be refused
    code = (
        "from types import SimpleNamespace\nfrom celery import Celery\n"
        "import tasks.runtime as r\n"
        "host = Celery('host', broker='memory://')\n"
        "host.amqp.queues.select(['celery'])\n"
        "for hook in (r._ready_to_work, r._say_without_types, r._refuse_unknown_queues):\n"
        "    hook(sender=SimpleNamespace(app=host))\n"
        "print('[]')\n"
    )
    done = run_python(code, url)
    assert done.returncode == 0, done.stderr
    assert "error [" not in done.stderr, done.stderr
