"""Celery settings (lowercase only), every value taken from workmanager's Settings.

Loaded by the app in ``tasks/app.py`` with ``config_from_object("celeryconfig")``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from celery.schedules import crontab
from kombu import Queue

from workmanager.errors import WorkManagerError
from workmanager.settings import Settings

try:
    _settings = Settings.from_env()
except WorkManagerError as _exc:
    command = Path(sys.argv[0])
    if not (command.name.startswith("celery") or command.parent.name == "celery"):
        raise  # a producer (enqueue_order) or a server: the error is its caller's to handle
    # A setting the user got wrong, under `celery -A tasks worker|beat|flower`: the one
    # error line (and its hint) workmanager's console prints, exit 1, not Celery's
    # traceback of this import.
    print(_exc.text(), file=sys.stderr, flush=True)
    raise SystemExit(1) from None

broker_url = _settings.broker_url
result_backend = _settings.result_backend
task_ignore_result = _settings.result_backend is None

# JSON only: other services send tasks by name, and nothing executable rides a message.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# A worker killed mid-task leaves its message unacknowledged: it is redelivered, and the
# tasks are written to be run again safely (SPEC §5).
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
broker_connection_retry_on_startup = True
# Celery gives up on a broker that has not answered for 100 tries (~46 minutes) and the
# worker exits, which a Procfile run does not restart: retry for as long as it takes.
broker_connection_max_retries = None

# Task events (received with the task's name and arguments, started, succeeded/failed/
# retried) are what Flower shows. Workers start with them off, as Celery's default: Flower
# switches them on in every worker it can reach (its enable_events broadcast, every 5 s
# while it runs), so a watched system has them and an unwatched one does not pay a publish
# per task state for them (~20 % of the pipeline's throughput, docs/benchmarks.md). Set
# WORK_MANAGER_WORKER_TASK_EVENTS=true for another events consumer that does not enable
# them itself. "task-sent" events stay off: they would add a publish to every send,
# producers' included, to show the backlog the queue-depth metric already reports.
worker_send_task_events = _settings.worker_task_events
task_send_sent_event = False
task_track_started = True

# A plain `celery -A tasks worker` consumes both control-plane queues; agents.<type>
# queues are consumed by `workmanager agent` only. Names from WORK_MANAGER_CONTROL_QUEUE,
# _APPLY_QUEUE and _AGENT_QUEUE_PREFIX (defaults workmanager, workmanager.apply, agents.).
task_default_queue = _settings.control_queue
task_queues = (Queue(_settings.control_queue), Queue(_settings.apply_queue))
task_routes = {
    "workmanager.orders.apply": {"queue": _settings.apply_queue},
    "workmanager.*": {"queue": _settings.control_queue},
}

# A delivered message not acknowledged within the visibility timeout (its worker died) is
# delivered again, on Redis and on the embedded broker (kombu's SQLAlchemy transport,
# tasks/embedded_transport.py); RabbitMQ ignores it (it redelivers when the connection
# drops). The embedded broker also polls empty queues every 50 ms instead of every second
# (an empty poll is one indexed SELECT per queue).
broker_transport_options: dict[str, float] = {
    "visibility_timeout": _settings.broker_visibility_timeout_seconds
}
if _settings.uses_embedded_broker:
    broker_transport_options["polling_interval"] = 0.05
# A Redis broker that freezes (stopped, swapping, a dropped network) keeps the connection
# open and never answers: without a socket timeout a publish waited as long as the freeze
# (a propose took 60 s, and enough of them held every API thread). kombu's consumer reads
# with BRPOP's 1 s timeout, well inside it.
if _settings.broker_url.startswith(("redis://", "rediss://")):
    broker_transport_options |= {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
# RabbitMQ: a publish waits for the broker's confirm. Without it a message sent while the
# broker closed the connection (a failover, a node restart) was dropped with no error and
# no log line: an item's announcement lost until maintenance re-sent it (34 s in an
# outage pass; up to WORK_MANAGER_REANNOUNCE_AFTER_SECONDS). With it the send fails, and
# the dispatcher's retry sends it again on a new connection.
if _settings.broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
    broker_transport_options["confirm_publish"] = True

beat_schedule = {
    "workmanager-sweep": {
        "task": "workmanager.leases.sweep",
        "schedule": _settings.sweep_interval_seconds,
    },
    "workmanager-maintenance": {
        "task": "workmanager.maintenance.run",
        "schedule": _settings.maintenance_interval_seconds,
    },
    "workmanager-generate": {
        "task": "workmanager.orders.generate",
        "schedule": crontab(minute="*/15"),
    },
}
