"""On RabbitMQ every publish waits for the broker's confirm (``confirm_publish``,
``celeryconfig.py``). Found by a scale-out pass: without it, an item's announcement sent
while the broker closed the connection was dropped with no error and no log line, and
the item waited for maintenance to announce it again (34 s there; up to
``WORK_MANAGER_REANNOUNCE_AFTER_SECONDS``)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from ..support.environment import clean_env
from .conftest import RABBITMQ_USER, ROOT, rabbitmqctl


def test_the_dispatchers_channel_is_in_confirm_mode_on_rabbitmq(rabbitmq: str) -> None:
    vhost = f"wm_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, RABBITMQ_USER, ".*", ".*", ".*")
        env = clean_env(WORK_MANAGER_BROKER_URL=f"{rabbitmq}/{vhost}")
        code = (
            "import uuid\n"
            "from tasks.app import app\n"
            "from tasks.dispatcher import CeleryDispatcher\n"
            "assert CeleryDispatcher(app)._send('workmanager.orders.apply', queue='wm.t',"
            " order_id=str(uuid.uuid4()))\n"
            "with app.producer_or_acquire() as producer:\n"
            "    print(producer.channel._confirm_selected)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "True", done.stdout + done.stderr
    finally:
        rabbitmqctl("delete_vhost", vhost)
