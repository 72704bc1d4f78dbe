"""A real Redis Cluster on loopback for the tests: three masters, one replica each.

Six ``redis-server --cluster-enabled yes`` processes on free ports in a temporary folder,
joined with ``redis-cli --cluster create --cluster-replicas 1``; ``stop()`` ends them and
the folder goes with the test's tmp path. Nothing is kept on disk (``--save ""``,
``--appendonly no``), as on the shared Redis. ``kill_master()`` SIGKILLs a master and
waits until its replica has taken its slots over.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Milliseconds before a silent master is failed over; short, so the failover test is quick.
NODE_TIMEOUT_MS = 1000


def available() -> str | None:
    """Why a cluster cannot be started here (``None`` when it can)."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    return None


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` ports P whose cluster bus port P + 10000 is free too."""
    ports: list[int] = []
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    while len(ports) < count:
        port = rng.randrange(20000, 29000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


def cli(port: int, *args: str, timeout: float = 10) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.stdout


@dataclass
class LocalCluster:
    tmp: Path
    ports: list[int] = field(default_factory=list)
    pids: dict[int, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def all_nodes_url(self) -> str:
        """Every node as a startup node (docs/configuration.md): a process that starts
        after one was killed still finds the cluster."""
        return "redis://" + ",".join(f"127.0.0.1:{port}" for port in self.ports) + "/0"

    def start(self, nodes: int = 6) -> LocalCluster:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.ports = free_ports(nodes)
        for port in self.ports:
            self._start_node(port)
        for port in self.ports:
            self._wait(lambda p=port: cli(p, "ping").strip() == "PONG", f"node {port} to answer")
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}")
        self.wait_ok()
        return self

    def _start_node(self, port: int) -> None:
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.tmp / f"nodes-{port}.conf"),
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                # A replica may always fail over, however long since it heard its master.
                "--cluster-replica-validity-factor",
                "0",
                "--repl-ping-replica-period",
                "1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
                "--pidfile",
                str(self.tmp / f"redis-{port}.pid"),
                "--logfile",
                str(self.tmp / f"redis-{port}.log"),
                "--daemonize",
                "yes",
            ],
            check=True,
            timeout=10,
        )
        pidfile = self.tmp / f"redis-{port}.pid"
        self._wait(lambda: pidfile.exists() and pidfile.read_text().strip(), "the pid file")
        self.pids[port] = int(pidfile.read_text().strip())

    def _wait(self, condition: object, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(condition) and condition():
                return
            time.sleep(0.1)
        raise RuntimeError(f"Redis Cluster: timed out waiting for {what}")

    def alive_ports(self) -> list[int]:
        return [p for p in self.ports if p in self.pids]

    def wait_ok(self, timeout: float = 30) -> None:
        """Every live node says ``cluster_state:ok`` and sees three masters with slots."""

        def ok() -> bool:
            for port in self.alive_ports():
                info = cli(port, "cluster", "info")
                if "cluster_state:ok" not in info or "cluster_size:3" not in info:
                    return False
            return True

        self._wait(ok, "cluster_state:ok on every node", timeout)

    def masters(self) -> list[int]:
        """The ports of the live nodes that are masters with slots."""
        out = []
        for line in cli(self.alive_ports()[0], "cluster", "nodes").splitlines():
            parts = line.split()
            if "master" in parts[2] and "fail" not in parts[2] and len(parts) > 8:
                out.append(int(parts[1].split("@")[0].rsplit(":", 1)[1]))
        return out

    def kill_master(self, timeout: float = 30) -> int:
        """SIGKILL one master; return its port once a replica serves its slots."""
        port = self.masters()[0]
        os.kill(self.pids.pop(port), signal.SIGKILL)

        def promoted() -> bool:
            masters = self.masters()
            return port not in masters and len(masters) == 3

        self._wait(promoted, f"a replica to take over from {port}", timeout)
        self.wait_ok(timeout)
        return port

    def stop(self) -> None:
        for port, pid in list(self.pids.items()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.pids.pop(port)


def started(tmp: Path) -> LocalCluster:
    """A cluster of a test's own, started; skipped with the reason where none can be
    (redis-server missing, a start that failed), a failure when ``CI`` is set."""
    from tests.conftest import need

    reason = available()
    if reason:
        need("Redis Cluster", reason)
    cluster = LocalCluster(tmp)
    try:
        return cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        cluster.stop()
        need("Redis Cluster", str(exc))
        raise
