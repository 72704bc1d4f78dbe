"""Start-up mistakes, run as the user runs them (the real executables, in a temporary
directory): a broker that refuses the credentials or the vhost, a result backend of no
known scheme, a bad setting under ``celery -A tasks …``, a port already taken. Each is one
``error [code]: …`` line with a hint and exit 1, never a traceback; an agent whose Celery
worker could not start exits non-zero, never 0."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_mistakes import Mistake, check
from tests.conftest import need
from workmanager import Settings
from workmanager.db.migrate import upgrade
from workmanager.db.session import Database
from workmanager.errors import ConfigurationError

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
RABBIT = ("127.0.0.1", 5672)
REDIS_DB = os.environ.get("WM_TEST_BROKER_DB", "11")
CREATE = ("orders", "create", "--type", "demo.research", "--payload", '{"company": "x"}')
REFUSED_HINT = "check the user, password and virtual host in WORK_MANAGER_BROKER_URL"


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory with a SQLite database at head (as after `workmanager db upgrade`)."""
    path = tmp_path_factory.mktemp("ready")
    db = Database(f"sqlite:///{path}/wm.db")
    upgrade(db)
    db.dispose()
    yield path


def run(
    exe: str, *args: str, cwd: Path, timeout: float = 90, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env.update(
        WORK_MANAGER_DATABASE_URL=f"sqlite:///{cwd}/wm.db",
        WORK_MANAGER_ORDER_TYPES="workmanager.demo.types",
        WORK_MANAGER_METRICS_DRIVER="null",
    )
    env.update(extra)
    return subprocess.run(
        [str(BIN / exe), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def rabbitmq() -> None:
    try:
        socket.create_connection(RABBIT, timeout=3).close()
    except OSError as exc:
        need("RabbitMQ", str(exc))


# --- 1. a broker that refuses: one line, not amqp's AccessRefused/NotAllowed traceback --------
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("amqp://guest:hunter2@127.0.0.1:5672//", "ACCESS_REFUSED"),
        ("amqp://guest:guest@127.0.0.1:5672/nosuchvhost", "NOT_ALLOWED"),
    ],
)
def test_a_broker_refusing_the_credentials_or_vhost_says_so(
    ready: Path, url: str, says: str
) -> None:
    rabbitmq()
    done = run("workmanager", *CREATE, cwd=ready, WORK_MANAGER_BROKER_URL=url)
    check(Mistake(CREATE, "unavailable", REFUSED_HINT), done)
    first = done.stderr.splitlines()[0]
    assert "refused the credentials/vhost" in first and says in first, done.stderr


def test_redis_refusing_the_credentials_says_so_too(ready: Path) -> None:
    url = f"redis://nobody:hunter2@127.0.0.1:6379/{REDIS_DB}"
    done = run("workmanager", *CREATE, cwd=ready, WORK_MANAGER_BROKER_URL=url)
    check(Mistake(CREATE, "unavailable", REFUSED_HINT), done)


def test_a_broker_that_is_not_there_is_still_unavailable(ready: Path) -> None:
    done = run(
        "workmanager",
        *CREATE,
        cwd=ready,
        WORK_MANAGER_BROKER_URL="amqp://guest:guest@127.0.0.1:1//",
    )
    check(Mistake(CREATE, "unavailable", "is the broker running?"), done)


# --- 2. workers and beat whose broker refuses: the same line, exit 1, no Celery traceback ------
WORKER_URLS = {
    "amqp": "amqp://guest:hunter2@127.0.0.1:5672//",
    "vhost": "amqp://guest:guest@127.0.0.1:5672/nosuchvhost",
    "redis": f"redis://nobody:hunter2@127.0.0.1:6379/{REDIS_DB}",
}
AGENT = ("workmanager", "agent", "--type", "demo.research", "--handler", "workmanager.demo:answer")


@pytest.mark.parametrize(
    ("command", "broker"),
    [
        pytest.param(AGENT, "amqp", id="agent-amqp"),
        pytest.param(("celery", "-A", "tasks", "worker", "--pool", "solo"), "vhost", id="worker"),
        pytest.param(("celery", "-A", "tasks", "beat"), "redis", id="beat-redis"),
    ],
)
def test_a_worker_whose_broker_refuses_stops_with_one_line(
    ready: Path, command: tuple[str, ...], broker: str
) -> None:
    """Celery printed "Unrecoverable error" and amqp's traceback (the agent), or retried
    for ever (beat); the start-up check says it once, exit 1, before any task is taken."""
    if broker != "redis":
        rabbitmq()
    exe, *args = command
    if args[-1] == "beat":
        args += ["--schedule", str(ready / "schedule")]
    done = run(
        exe,
        *args,
        cwd=ready,
        PYTHONPATH=str(ROOT),
        WORK_MANAGER_BROKER_URL=WORKER_URLS[broker],
    )
    said = done.stdout + done.stderr
    assert done.returncode == 1, said[-2000:]
    assert "Traceback" not in said and "Unrecoverable error" not in said, said[-2000:]
    assert "hunter2" not in said
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error [")]
    assert line.startswith("error [unavailable]: the broker at ") and "refused" in line, line
    assert f"hint: {REFUSED_HINT}" in done.stderr


# --- 3. a bad setting under `celery -A tasks …`: the one line, exit 1 ------------------------
@pytest.mark.parametrize("command", ["worker", "beat"])
def test_celery_with_a_bad_setting_prints_one_line(command: str, tmp_path: Path) -> None:
    done = run(
        "celery",
        "-A",
        "tasks",
        command,
        cwd=tmp_path,
        PYTHONPATH=str(ROOT),
        WORK_MANAGER_LEASE_TTL_SECONDS="0",
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "error [configuration_error]: WORK_MANAGER_LEASE_TTL_SECONDS: expected whole seconds "
        "from 1 to 315360000 (ten years), got '0'"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_a_producer_with_a_bad_setting_gets_the_error_not_an_exit(tmp_path: Path) -> None:
    """celeryconfig's one-line exit is for the ``celery`` command: a service sending
    orders (``enqueue_order``) gets the ConfigurationError to handle, not a SystemExit
    that no ``except Exception`` catches."""
    code = (
        "from tasks import enqueue_order\n"
        "try:\n"
        "    enqueue_order('demo.research', {'company': 'c'})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    done = run("python", "-c", code, cwd=tmp_path, PYTHONPATH=str(ROOT),
               WORK_MANAGER_LEASE_TTL_SECONDS="abc")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ConfigurationError"


def test_beat_where_there_is_no_database_stops_with_one_line(tmp_path: Path) -> None:
    """Beat started from another directory on the embedded default ran on, a traceback
    every tick; it now stops at start-up as the worker does (no file created)."""
    done = run(
        "celery",
        "-A",
        "tasks",
        "beat",
        "--schedule",
        str(tmp_path / "schedule"),
        cwd=tmp_path,
        PYTHONPATH=str(ROOT),
    )
    assert done.returncode == 1, (done.stdout, done.stderr[-2000:])
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.startswith(f"error [unavailable]: no database at {tmp_path}/wm.db\n")


# --- 4. WORK_MANAGER_RESULT_BACKEND is checked like the broker URL ----------------------------
def test_a_misspelled_result_backend_is_refused_with_a_suggestion(ready: Path) -> None:
    backend = {"WORK_MANAGER_RESULT_BACKEND": "reddis://:hunter2@127.0.0.1:6379/9"}
    done = run("workmanager", "ops", "check", cwd=ready, **backend)
    check(
        Mistake(("ops", "check"), "configuration_error", "did you mean redis://?"),
        done,
    )
    assert "WORK_MANAGER_RESULT_BACKEND" in done.stderr.splitlines()[0]
    # and under Celery itself, instead of every worker dying with ModuleNotFoundError
    worker = run("celery", "-A", "tasks", "worker", cwd=ready, PYTHONPATH=str(ROOT), **backend)
    check(Mistake(("worker",), "configuration_error", "did you mean redis://?"), worker)


@pytest.mark.parametrize(
    "value",
    [
        "redis://127.0.0.1:6379/9",
        "rediss://:pw@redis.internal:6380/0?ssl_cert_reqs=required",
        "sentinel://127.0.0.1:26379",
        "rpc://",
        "db+sqlite:///results.db",
        "db+postgresql+psycopg://u:p@db/results",
        "",
    ],
)
def test_result_backends_celery_knows_are_accepted(value: str) -> None:
    settings = Settings.from_env({"WORK_MANAGER_RESULT_BACKEND": value})
    assert settings.result_backend == (value or None)


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("sqlite:///results.db", "did you mean db+sqlite://"),
        ("amqp://guest@127.0.0.1//", "did you mean rpc://"),
        ("redis", "did you mean redis://"),
        ("mongodb://127.0.0.1/x", "leave it unset"),
        ("REDIS://127.0.0.1:6379/0", "did you mean redis://"),
    ],
)
def test_other_result_backends_are_refused(value: str, hint: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"WORK_MANAGER_RESULT_BACKEND": value})
    assert raised.value.message.startswith("WORK_MANAGER_RESULT_BACKEND: expected")
    assert raised.value.hint and hint in raised.value.hint
    assert "@" not in raised.value.text()  # only the scheme is shown, never a password


# --- 5. a port already in use ---------------------------------------------------------------
@pytest.mark.parametrize(
    "command", [("serve",), ("mcp", "--transport", "http"), ("mcp", "--transport", "sse")]
)
def test_serve_on_a_port_in_use_names_the_address(ready: Path, command: tuple[str, ...]) -> None:
    """``mcp --transport http|sse`` exited 3 with uvicorn's ``[Errno 98]`` lines."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = (*command, "--port", str(port))
        done = run("workmanager", "--dispatcher", "none", *args, cwd=ready)
    check(Mistake(args, "configuration_error", "another process listens there"), done)
    first = done.stderr.splitlines()[0]
    assert f"127.0.0.1:{port}" in first and "address already in use" in first, done.stderr
    assert "choose another --port" in done.stderr


# --- 5. a worker that could only wait on nothing: one line, exit 1 ---------------------------
def said_once(done: subprocess.CompletedProcess[str], error: str, hint: str) -> None:
    """Exit 1, no traceback, the one ``error [...]`` line and its hint (Celery's own
    warning about running as root may come first)."""
    said = done.stdout + done.stderr
    assert done.returncode == 1, said[-3000:]
    assert "Traceback" not in said, said[-3000:]
    assert [x for x in done.stderr.splitlines() if x.startswith("error [")] == [error], said
    assert f"hint: {hint}" in done.stderr, said


def test_a_worker_consuming_a_queue_nothing_is_sent_to_is_refused(ready: Path) -> None:
    """``-Q workmanger`` (a typo, or the default name where the deployment renamed its
    queues) declared that queue and consumed it, empty, for ever, with no word."""
    (ready / "var").mkdir(exist_ok=True)
    worker = ("celery", "-A", "tasks", "worker", "--pool", "solo")
    done = run(*worker, "-Q", "workmanger", cwd=ready, PYTHONPATH=str(ROOT))
    said_once(
        done,
        "error [configuration_error]: -Q workmanger: no workmanager task is sent to this queue",
        "the control queue is 'workmanager' (WORK_MANAGER_CONTROL_QUEUE)",
    )
    # `-Q "$WORK_MANAGER_CONTROL_QUEUE"` with the variable unset (an operator's pass)
    done = run(*worker, "-Q", "", cwd=ready, PYTHONPATH=str(ROOT))
    said_once(
        done,
        "error [configuration_error]: -Q names no queue (an empty value: an unset variable,"
        ' `-Q "$X"`?)',
        "the control queue is 'workmanager' (WORK_MANAGER_CONTROL_QUEUE)",
    )


def test_a_worker_may_drain_an_old_queue_beside_its_own(ready: Path) -> None:
    """Found by an adversarial pass: the step docs/configuration.md gives after renaming
    a queue — a worker with the new settings that also reads the old queue, ``-Q
    <new>,<old>`` — was refused, and the proposals waiting in the old queue were lost.
    Beside a queue that is sent to, another is read, with a warning line."""
    (ready / "var").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env.update(
        WORK_MANAGER_DATABASE_URL=f"sqlite:///{ready}/wm.db",
        WORK_MANAGER_ORDER_TYPES="workmanager.demo.types",
        WORK_MANAGER_METRICS_DRIVER="null",
        PYTHONPATH=str(ROOT),
    )
    worker = [str(BIN / "celery"), "-A", "tasks", "worker", "--pool", "solo"]
    proc = subprocess.Popen(
        [*worker, "-Q", "workmanager,old-control"],
        env=env,
        cwd=ready,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    warned = "-Q old-control: no workmanager task is sent to it; read as an old queue"
    stop = threading.Timer(60, proc.kill)  # a worker that never says it: the test fails
    stop.start()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if warned in line:
                break
        time.sleep(2)  # a refusal would follow at once
        running = proc.poll() is None
    finally:
        stop.cancel()
        proc.terminate()
        proc.wait(timeout=30)
    said = "".join(seen)
    assert warned in said and "error [" not in said, said[-3000:]
    assert running, said[-3000:]


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_a_worker_whose_embedded_broker_has_no_directory_is_refused(
    tmp_path: Path, command: str
) -> None:
    """Started from a directory without ``var/`` (the database named elsewhere), a worker
    reconnected to the embedded broker's missing file several times a second, for ever,
    a warning each time; now it stops at start-up, naming the file and the fix."""
    db = Database(f"sqlite:///{tmp_path}/wm.db")
    upgrade(db)
    db.dispose()
    args = ["--pool", "solo"] if command == "worker" else ["--schedule", str(tmp_path / "s")]
    done = run("celery", "-A", "tasks", command, *args, cwd=tmp_path, PYTHONPATH=str(ROOT))
    said_once(
        done,
        f"error [unavailable]: no embedded broker at {tmp_path}/var/broker.db: the directory"
        f" {tmp_path}/var does not exist",
        "run `workmanager db upgrade` first",
    )
    assert not (tmp_path / "var").exists()


def test_an_order_type_module_that_raises_is_named_by_file_and_line(ready: Path) -> None:
    """The console's one line said "the traceback above is the module's own", with no
    traceback above it (a console command prints none): the hint names where it raised."""
    (ready / "raising_mod.py").write_text("ok = 1\n\nraise RuntimeError('the module broke')\n")
    done = run(
        "workmanager", "orders", "list", cwd=ready,
        WORK_MANAGER_ORDER_TYPES="raising_mod", PYTHONPATH=str(ready),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"hint: fix it at {ready}/raising_mod.py:3 " in done.stderr, done.stderr
    assert "traceback above" not in done.stderr and "Traceback" not in done.stderr


def test_a_memory_broker_is_refused_where_a_message_must_reach_another_process(
    ready: Path,
) -> None:
    """``orders create`` with ``WORK_MANAGER_BROKER_URL=memory://`` said the order was
    enqueued, into its own memory, and it was lost; a worker on it read its own."""
    done = run("workmanager", *CREATE, cwd=ready, WORK_MANAGER_BROKER_URL="memory://")
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("error [configuration_error]: WORK_MANAGER_BROKER_URL=memory")
    worker = run(
        "celery", "-A", "tasks", "worker", "--pool", "solo", cwd=ready,
        WORK_MANAGER_BROKER_URL="memory://",
    )  # fmt: skip
    assert worker.returncode == 1 and "WORK_MANAGER_BROKER_URL=memory" in worker.stderr
