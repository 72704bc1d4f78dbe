"""The bare Celery worker of ``bench.workers`` with our storage libraries, for information.

``bench.bare_worker`` plus what any worker that keeps its state in PostgreSQL the way ours
does holds: SQLAlchemy's ORM, its psycopg dialect and psycopg, an engine (pool of 5), and
each task one ``SELECT 1`` through it. The distance from it to our workers is our own code
and what it keeps; the distance from the bare worker to it is the libraries'. Run as
``celery -A bench.bare_sql_worker worker`` with ``WM_BENCH_BARE_BROKER`` and
``WM_BENCH_BARE_DB`` (a SQLAlchemy URL).
"""

from __future__ import annotations

import os

import sqlalchemy.orm  # noqa: F401  (our models and services use the ORM)
from celery import Celery
from sqlalchemy import create_engine, text

app = Celery(
    "bare_sql_worker", broker=os.environ.get("WM_BENCH_BARE_BROKER", "redis://127.0.0.1:6379/12")
)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
)
engine = create_engine(
    os.environ.get("WM_BENCH_BARE_DB", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
    pool_size=5,
)


@app.task(name="bare.select")
def select(n: int) -> int:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1")).scalar()
    return n
