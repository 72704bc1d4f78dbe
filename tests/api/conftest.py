"""A real API server process (uvicorn via ``workmanager serve``) on PostgreSQL.

One database for the whole API suite (``<pg test db>_api``); each server start truncates
the work tables (tokens survive, so the tokens made once through the CLI stay valid).
``server`` is parametrized over both lease backends; it and ``db_server`` are started once
per session and handed to each module as if started for it (work tables truncated, the
Redis lease keys deleted, clients of its own). A module that needs other settings starts
a server of its own with ``start_server``. The database and the tokens (``api_db_url``,
``tokens``) are ``tests/support/api_fixtures.py``'s, one instance for every directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from workmanager.db.models import Base
from workmanager.db.session import Database

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PREFIX = "/agent/work"
TOKENS = {
    # name: (scopes, bound agent)
    "admin": ("admin", None),
    "viewer": ("view", None),
    "agent-a": ("checkout,submit,view,propose", None),
    "agent-b": ("checkout,submit,view", None),
    "bound": ("checkout,submit,view", "bound-agent-1"),
    "proposer": ("propose", None),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "WORK_MANAGER_DATABASE_URL": db_url,
            "WORK_MANAGER_ORDER_TYPES": "tests.api.server_types",
            "WORK_MANAGER_METRICS_DRIVER": "null",
            "WORK_MANAGER_MAX_BODY_BYTES": "65536",
            "WORK_MANAGER_RETRY_BACKOFF_SECONDS": "0",
            "WORK_MANAGER_RETRY_JITTER_SECONDS": "0",
            # the servers' dispatchers send nothing; /readyz opens the broker's file
            "WORK_MANAGER_BROKER_URL": f"sqla+sqlite:///{tempfile.gettempdir()}/wm-api-broker.db",
        }
    )
    env.update(extra)
    return env


def mcp_http(port: int, transport: str = "http") -> list[str]:
    """``workmanager mcp`` over HTTP on ``port``, announcing nothing (no workers run)."""
    return [str(BIN / "workmanager"), "--dispatcher", "none", "mcp", "--transport", transport,
            "--port", str(port)]  # fmt: skip


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "workmanager"), *args], env=env, capture_output=True, text=True, timeout=60
    )


@dataclass
class Server:
    url: str
    backend: str
    tokens: dict[str, str]
    proc: subprocess.Popen[bytes]
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, token: str | None = "admin", agent: str | None = None) -> httpx.Client:
        """An httpx client with that token and ``X-Agent-ID``."""
        key = f"{token}/{agent}"
        if key not in self.clients:
            headers = {}
            if token:
                headers["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
            if agent:
                headers["X-Agent-ID"] = agent
            self.clients[key] = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        return self.clients[key]

    def close(self) -> None:
        for c in self.clients.values():
            c.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def truncate_work_tables(url: str) -> None:
    db = Database(url)
    names = ", ".join(t.name for t in Base.metadata.sorted_tables if t.name != "work_api_tokens")
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    db.dispose()


def start_server(
    db_url: str, tokens: dict[str, str], backend: str, redis_url: str | None, **env: str
) -> Server:
    truncate_work_tables(db_url)
    port = free_port()
    extra = {"WORK_MANAGER_LEASE_BACKEND": backend, **env}
    if redis_url:
        extra["WORK_MANAGER_REDIS_URL"] = redis_url
        extra.setdefault("WORK_MANAGER_REDIS_PREFIX", f"wmapi:{uuid.uuid4().hex[:8]}:")
    args = [
        str(BIN / "workmanager"),
        "serve",
        "--port",
        str(port),
        "--dispatcher",
        "tests.api.server_types:worker_threads",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(args, env=base_env(db_url, **extra))
    server = Server(f"http://127.0.0.1:{port}", backend, tokens, proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the API server exited"
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.close()
    raise AssertionError("the API server did not start")


BACKEND_PARAMS = [
    pytest.param("database", marks=pytest.mark.postgres),
    pytest.param("redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
]


@dataclass
class _Running:
    server: Server
    redis_url: str | None
    prefix: str | None


@pytest.fixture(scope="session")
def running_servers() -> Iterator[dict[str, _Running]]:
    """The plain servers (no extra environment), one per lease backend, started on first
    use and shared by every module that asks for ``server`` or ``db_server``: a server
    start is seconds of the suite each time, and these hold nothing a module could see
    of another once the work tables are truncated and their Redis keys deleted."""
    running: dict[str, _Running] = {}
    yield running
    for r in running.values():
        r.server.close()


def _for_module(
    running: dict[str, _Running],
    backend: str,
    db_url: str,
    tokens: dict[str, str],
    redis_url: str | None,
) -> Iterator[Server]:
    """The shared server of ``backend`` for one module, as if started for it: empty work
    tables, no lease keys, clients of its own."""
    r = running.get(backend)
    if r is None or r.server.proc.poll() is not None:
        prefix = f"wmapi:{uuid.uuid4().hex[:8]}:" if redis_url else None
        env = {"WORK_MANAGER_REDIS_PREFIX": prefix} if prefix else {}
        srv = start_server(db_url, tokens, backend, redis_url, **env)  # truncates
        r = running[backend] = _Running(srv, redis_url, prefix)
    else:
        truncate_work_tables(db_url)
        if r.redis_url and r.prefix:
            import redis

            client = redis.Redis.from_url(r.redis_url)
            keys = list(client.scan_iter(match=r.prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
    view = Server(r.server.url, backend, tokens, r.server.proc)
    yield view
    for c in view.clients.values():
        c.close()


@pytest.fixture(scope="module", params=BACKEND_PARAMS)
def server(
    request: pytest.FixtureRequest,
    api_db_url: str,
    tokens: dict[str, str],
    running_servers: dict[str, _Running],
) -> Iterator[Server]:
    backend = request.param
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else None
    yield from _for_module(running_servers, backend, api_db_url, tokens, redis_url)


@pytest.fixture(scope="module")
def db_server(
    api_db_url: str, tokens: dict[str, str], running_servers: dict[str, _Running]
) -> Iterator[Server]:
    """The server on the database lease backend (suites that need not run twice)."""
    yield from _for_module(running_servers, "database", api_db_url, tokens, None)


def idem() -> dict[str, str]:
    return {"X-Idempotency-Key": uuid.uuid4().hex}


def propose(client: httpx.Client, type: str = "test.simple", **body: Any) -> dict[str, Any]:
    r = client.post(f"{PREFIX}/propose", json={"type": type, "payload": {}, **body}, headers=idem())
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()["order"]
    return order


def checkout(client: httpx.Client, order_id: str | None = None) -> dict[str, Any]:
    path = f"{PREFIX}/orders/{order_id}/checkout" if order_id else f"{PREFIX}/checkout"
    r = client.post(path)
    assert r.status_code == 200, r.text
    item: dict[str, Any] = r.json()["item"]
    return item


def lease_headers(item: dict[str, Any], **extra: str) -> dict[str, str]:
    return {"X-Lease-Token": str(item["lease_token"]), **idem(), **extra}
