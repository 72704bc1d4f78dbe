"""The bare Celery worker of ``bench.workers``: the memory floor our workers are compared with.

A minimal app on the same broker with one no-op task and nothing else imported: what any
Celery worker on Redis holds. Run as ``celery -A bench.bare_worker worker`` with the
broker in ``WM_BENCH_BARE_BROKER``.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "bare_worker", broker=os.environ.get("WM_BENCH_BARE_BROKER", "redis://127.0.0.1:6379/12")
)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
)


@app.task(name="bare.noop")
def noop(n: int) -> int:
    return n
