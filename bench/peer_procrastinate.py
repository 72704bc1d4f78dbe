"""The peer: procrastinate (PyPI) on the same PostgreSQL server, in its own database.

N jobs of a no-op task are deferred one by one, then one worker (concurrency 1, no
LISTEN/NOTIFY, ``wait=False`` so it returns once the queue is empty) fetches, runs and
finishes them. The task is ``async`` and does nothing: procrastinate's fastest path.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .common import Config, Figures, create_database


async def _run(dsn: str, n: int, schema: bool) -> Figures:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="bench_noop")
    async def noop(i: int) -> None:
        return None

    async with app.open_async():
        if schema:
            await app.schema_manager.apply_schema_async()
        start = time.perf_counter()
        for i in range(n):
            await noop.defer_async(i=i)
        deferred = time.perf_counter()
        await app.run_worker_async(
            wait=False, concurrency=1, listen_notify=False, install_signal_handlers=False
        )
        done = time.perf_counter()
        row = await app.connector.execute_query_one_async(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE status <> 'succeeded'"
        )
    if row["n"]:
        raise RuntimeError(f"procrastinate left {row['n']} jobs unfinished")
    defer_s, worker_s = deferred - start, done - deferred
    return {
        "n": n,
        "defer_jobs_per_s": n / defer_s,
        "worker_jobs_per_s": n / worker_s,
        "full_jobs_per_s": n / (defer_s + worker_s),
        "defer_s": defer_s,
        "worker_s": worker_s,
    }


def peer_figures(cfg: Config, n: int, first: bool = True) -> Figures:
    """One round of the peer; the first creates its database (the caller drops it)."""
    if first:
        create_database(cfg, cfg.peer_db)
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    return asyncio.run(_run(cfg.dsn(cfg.peer_db), n, schema=first))
