"""Real Celery workers as subprocesses, on a Redis or RabbitMQ broker and PostgreSQL.

``stack`` starts processes with an environment that points every WORK_MANAGER_* setting at
this test's PostgreSQL database, a broker of its own (a Redis db, or a RabbitMQ vhost made
for the stack and deleted after it) and a lease prefix of its own; the test process talks
to the same broker through a producer app of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from workmanager import Registry, Settings, WorkManager
from workmanager.db.session import Database

from ..conftest import truncate_all
from ..support.parallel import scope_of
from ..support.pipeline import register

ROOT = Path(__file__).resolve().parents[2]
#: Redis db of the broker; WM_TEST_BROKER_DB lets two runs on one machine stay apart.
BROKER_DB = int(os.environ.get("WM_TEST_BROKER_DB", "14"))
#: The Redis db of the browser tests' stacks (tests/ui), which run beside the "broker"
#: group under ``make test`` (tests/support/parallel.py): two stacks on one db take each
#: other's messages, and each flushes the db the other is using.
UI_BROKER_DB = int(os.environ.get("WM_TEST_UI_BROKER_DB", "10"))
#: RabbitMQ on loopback; each stack gets a vhost of its own under it (rabbitmqctl).
RABBITMQ_URL = os.environ.get("WM_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
RABBITMQ_USER = os.environ.get("WM_TEST_RABBITMQ_USER", "guest")
#: The brokers a stack can run on; tests parametrize over them with the ``broker`` fixture.
BROKERS = ("redis", "rabbitmq")


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def rabbitmq() -> str:
    """RabbitMQ's base URL (no vhost), after checking it answers and rabbitmqctl is here."""
    try:
        from kombu import Connection

        with Connection(RABBITMQ_URL + "//", connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        from ..conftest import need

        need("RabbitMQ", str(exc))
    if shutil.which("rabbitmqctl") is None:
        from ..conftest import need

        need("RabbitMQ", "rabbitmqctl is not on PATH (the tests make a vhost per stack)")
    return RABBITMQ_URL


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over the brokers: pass it to ``make_stack(broker=...)``."""
    if request.param == "rabbitmq":
        request.getfixturevalue("rabbitmq")
    return str(request.param)


class Stack:
    """The processes of one test, and a WorkManager + producer app beside them."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env = env
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.settings = Settings.from_env(env)
        registry = Registry()
        register(registry)
        self.wm = WorkManager(self.settings, registry=registry)
        self.app = Celery("producer", broker=self.settings.broker_url)
        self.app.conf.task_serializer = "json"

    def start(self, name: str, command: list[str], **extra_env: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed at stop
        proc = subprocess.Popen(
            command,
            env={**self.env, **extra_env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def worker(self, name: str = "control", concurrency: int = 4, **extra_env: str) -> None:
        self.start(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tasks",
                "worker",
                "-Q",
                "workmanager,workmanager.apply",
                "-P",
                "threads",
                "-c",
                str(concurrency),
                "-n",
                f"{name}-{uuid.uuid4().hex[:6]}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            **extra_env,
        )

    def agent(
        self,
        order_type: str,
        handler: str,
        concurrency: int = 4,
        name: str = "agent",
        pool: str = "threads",
    ) -> None:
        self.start(
            name,
            [
                sys.executable,
                "-m",
                "workers.agent",
                "--type",
                order_type,
                "--handler",
                handler,
                "--concurrency",
                str(concurrency),
                "--agent-id",
                f"{name}-1",
                "--pool",
                pool,
            ],
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        logs = "\n".join(f"--- {n} ---\n{self.log(n)[-3000:]}" for n in self.procs)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")

    def stop(self) -> None:
        """End the processes at the end of the test: SIGKILL to each process group. A
        graceful stop proves nothing here (test_shutdown.py sends its own SIGTERM and
        checks what follows) and cost a few seconds per stack, RabbitMQ's the most; the
        next stack flushes its broker db (or gets a vhost of its own) and truncates the
        tables, and PostgreSQL ends a killed process's transactions."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait(timeout=20)
        self.wm.close()


@pytest.fixture
def broker_db() -> int:
    """The Redis db this module's stacks use (flushed by each). A module outside the
    "broker" group of tests/support/parallel.py overrides it with a db of its own."""
    return BROKER_DB


@pytest.fixture
def make_stack(
    request: pytest.FixtureRequest, pg_url: str, redis_url: str, tmp_path: Path, broker_db: int
) -> Iterator[Callable[..., Stack]]:
    if broker_db == BROKER_DB and scope_of(request.node.nodeid) != "broker":
        pytest.fail(
            f"{request.node.nodeid} runs beside the broker group (tests/support/parallel.py)"
            f" but its stacks would share Redis db {BROKER_DB} with it: override the"
            " broker_db fixture with a db of its own"
        )
    stacks: list[Stack] = []
    vhosts: list[str] = []

    def factory(broker: str = "redis", **settings: str) -> Stack:
        import redis

        if broker == "rabbitmq":
            base = request.getfixturevalue("rabbitmq")
            vhost = f"wm_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            rabbitmqctl("add_vhost", vhost)
            vhosts.append(vhost)
            rabbitmqctl("set_permissions", "-p", vhost, RABBITMQ_USER, ".*", ".*", ".*")
            broker_url = f"{base}/{vhost}"
        else:
            broker_url = redis_url.rsplit("/", 1)[0] + f"/{broker_db}"
            redis.Redis.from_url(broker_url).flushdb()
        truncate_all(Database(pg_url))
        markers = tmp_path / "markers"
        markers.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
        env.update(
            {
                "WORK_MANAGER_DATABASE_URL": pg_url,
                "WORK_MANAGER_BROKER_URL": broker_url,
                "WORK_MANAGER_REDIS_URL": redis_url,
                "WORK_MANAGER_REDIS_PREFIX": f"wmtest:{uuid.uuid4().hex[:8]}:",
                "WORK_MANAGER_ORDER_TYPES": "tests.support.pipeline",
                "WORK_MANAGER_HEARTBEAT_EVERY_SECONDS": "1",
                "WM_TEST_MARKERS": str(markers),
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update({f"WORK_MANAGER_{k.upper()}": v for k, v in settings.items()})
        stack = Stack(env, tmp_path)
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        stack.stop()
    for vhost in vhosts:
        # a leftover vhost holds no state another run reads
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            rabbitmqctl("delete_vhost", vhost)
