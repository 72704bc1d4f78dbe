"""``workmanager orders create --wait`` on a terminal, as a person runs it (issue 14): a live
status line names the order's state and its items' states while it waits, and
``--timeout`` ends the wait with ``error [timed_out]`` (exit 1) while the work goes on.

No worker runs here: the order already exists under the dedupe key (its id derives from
the key), so the message sent changes nothing and the order stays ``queued``."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

from workmanager import Registry, Settings, WorkManager
from workmanager.db.migrate import upgrade
from workmanager.db.session import Database
from workmanager.demo.types import register

EXE = Path(sys.executable).with_name("workmanager")
PAYLOAD = '{"company": "Acme", "questions": ["q"]}'


def on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``args`` with stdout and stderr on a pseudo-terminal; its exit code and all it
    wrote there."""
    parent, child = pty.openpty()
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=child, stderr=child)
    os.close(child)
    out = bytearray()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out.extend(chunk)
    os.close(parent)
    return proc.wait(timeout=30), out.decode(errors="replace")


def test_wait_shows_a_live_status_line_and_times_out(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/wm.db")
    upgrade(db)
    registry = Registry()
    register(registry)
    settings = Settings(database_url=db.url, lease_backend="database", metrics_driver="null")
    wm = WorkManager(settings, registry=registry, database=db)
    try:
        order_id = wm.propose("demo.research", {"company": "Acme", "questions": ["q"]},
                              dedupe_key="wait-1")  # fmt: skip
    finally:
        wm.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env.update(
        WORK_MANAGER_DATABASE_URL=db.url,
        WORK_MANAGER_BROKER_URL=f"sqla+sqlite:///{tmp_path}/broker.db",
        WORK_MANAGER_ORDER_TYPES="workmanager.demo.types",
        WORK_MANAGER_METRICS_DRIVER="null",
        COLUMNS="200",
        TERM="xterm",
    )
    code, shown = on_a_terminal(
        [str(EXE), "orders", "create", "--type", "demo.research", "--payload", PAYLOAD,
         "--dedupe-key", "wait-1", "--wait", "--timeout", "2"],
        env,
        tmp_path,
    )  # fmt: skip
    assert code == 1, shown
    assert f"order {order_id}: queued · items: 1 queued" in shown, shown
    assert f"error [timed_out]: order {order_id} is still queued after 2s" in shown, shown
    assert "hint: no agent has leased its items: is an agent for its type running" in shown
    assert "Traceback" not in shown
