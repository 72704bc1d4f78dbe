"""A bare Celery chain with the same hops as an order's pipeline, for ``bench.pipeline``.

create → agent → check_auto_approval → apply is four task hops; these four no-op tasks
pass a message along the same way (each sends the next by name), and the last one counts
itself in Redis. Run as a worker with ``celery -A bench.bare_chain worker``.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

BROKER = os.environ.get("WM_BENCH_BROKER", "redis://127.0.0.1:6379/11")
COUNTER = "wmbench:bare_chain:done"

app = Celery("bare_chain", broker=BROKER)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue="bare",
)
# The counter lives in Redis, also when the broker is RabbitMQ (bench.pipeline sets it).
_redis = redis.Redis.from_url(os.environ.get("WM_BENCH_COUNTER_URL", BROKER))


@app.task(name="bare.hop1")
def hop1(n: int) -> None:
    app.send_task("bare.hop2", args=[n], queue="bare")


@app.task(name="bare.hop2")
def hop2(n: int) -> None:
    app.send_task("bare.hop3", args=[n], queue="bare")


@app.task(name="bare.hop3")
def hop3(n: int) -> None:
    app.send_task("bare.hop4", args=[n], queue="bare")


@app.task(name="bare.hop4")
def hop4(n: int) -> None:
    _redis.incr(COUNTER)
