"""A ``redis-server`` of a test's own on a free loopback port, without persistence: one it
may flush, kill or restart without touching the shared Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import need
from tests.support.waiting import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A ``redis-server`` of this test's own, without persistence, that it may kill."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            need("Redis", "no redis-server binary to start a Redis this test may kill")
        self.binary = str(binary)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.answers, timeout=10, what="redis-server to answer")

    def answers(self) -> bool:
        import redis

        assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def own_redis(pg_url: str) -> Iterator[OwnRedis]:
    """A started :class:`OwnRedis`, killed at the end (beside the test's PostgreSQL)."""
    server = OwnRedis()
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()
