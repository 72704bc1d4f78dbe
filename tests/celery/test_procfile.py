"""``honcho start`` brings the whole Procfile stack up: web, worker, beat, flower, agent,
on queue names of its own (the worker line follows the settings) with Flower on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tasks.producer import control_queue, enqueue_order
from workmanager.errors import NotFound

from .test_observability import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (Linux /proc)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for row in list(f)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    out.add(address)
    return out


def test_honcho_starts_every_procfile_line(
    make_stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Queue names that are not the defaults: a worker line with a hard-coded
    # `-Q workmanager,workmanager.apply` never sees the order (nor its apply).
    queues = {"control_queue": "wmtest.procfile", "apply_queue": "wmtest.procfile.apply"}
    stack = make_stack(sweep_interval_seconds="1", **queues)
    honcho = shutil.which("honcho", path=str(Path(sys.executable).parent))
    assert honcho, "honcho is installed with the dev extra"
    web, flower = free_port(), free_port()
    env = {
        **stack.env,
        "FLOWER_PORT": str(flower),
        "PATH": str(Path(honcho).parent) + ":" + os.environ.get("PATH", ""),
    }
    # Unset, as on a fresh machine: the Procfile's own default (the demo types) applies and
    # the example agent line starts instead of exiting and taking the stack down with it.
    del env["WORK_MANAGER_ORDER_TYPES"]
    log = (tmp_path / "honcho.log").open("wb")
    proc = subprocess.Popen(
        [
            honcho,
            "start",
            "-f",
            str(ROOT / "Procfile"),
            "-d",
            str(ROOT),
            "-p",
            str(web),
            "--no-colour",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        stack.wait_for(lambda: answers(f"http://127.0.0.1:{web}/healthz"), 60, "web to answer")
        stack.wait_for(
            lambda: answers(f"http://127.0.0.1:{flower}/healthcheck"), 60, "flower to answer"
        )
        # Flower listens on loopback only (IPv4 127.0.0.1 in /proc/net/tcp's byte order).
        addresses = listening_addresses(flower)
        if addresses:  # not Linux: nothing to read
            assert addresses == {"0100007F"}, addresses
        # The producer sends to this process's WORK_MANAGER_CONTROL_QUEUE: the stack's.
        monkeypatch.setenv("WORK_MANAGER_CONTROL_QUEUE", queues["control_queue"])
        control_queue.cache_clear()
        try:
            order_id = enqueue_order("demo.research", {"company": "Acme"}, app=stack.app)
        finally:
            control_queue.cache_clear()
        stack.wait_for(
            lambda: _state(stack, order_id) == "completed",
            90,
            "worker and agent to complete an order",
        )
        text = (tmp_path / "honcho.log").read_text(errors="replace")
        stack.wait_for(
            lambda: (
                "workmanager.leases.sweep" in (tmp_path / "honcho.log").read_text(errors="replace")
            ),
            30,
            "beat to send the sweep",
        )
        for name in ("web.1", "worker.1", "beat.1", "flower.1", "agent.1"):
            assert name in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _state(stack, order_id) -> str | None:
    try:
        return str(stack.wm.queries.order(order_id)["state"])
    except NotFound:  # not created yet
        return None
