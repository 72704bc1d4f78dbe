"""The Celery app, configured from ``celeryconfig`` (which reads workmanager's Settings)."""

from __future__ import annotations

from celery import Celery

from . import (
    logs,  # noqa: F401  (installs the one-line and throttled log filters: tasks/logs.py)
    tracing,  # noqa: F401  (connects its worker start hook: traces when configured)
    transports,
)

transports.install()  # before any connection: the project's kombu transports (tasks/transports.py)
# GuardedTask: a malformed hand-built message is discarded instead of killing the worker
# (tasks/guard.py), said in one logged line (tasks/logs.py)
app = Celery("workmanager", task_cls="tasks.guard:GuardedTask")
app.config_from_object("celeryconfig")
# Every worker knows every control-plane task name.
app.conf.imports = ("tasks.orders", "tasks.beat")
