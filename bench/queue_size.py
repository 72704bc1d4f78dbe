"""Checkout latency with a small and a large queue: it should not grow with the queue.

Each queue is built in its own database in SQL (``INSERT … SELECT generate_series``)
with valid rows: orders of 10 items, priorities 0-9, items in creation order. Then global
checkouts on the two are timed in alternating chunks, with each lease backend, so load
from other processes falls on both sizes alike.
"""

from __future__ import annotations

import dataclasses

from .common import (
    AGENT,
    Config,
    Figures,
    create_database,
    create_schema,
    make_wm,
    measure_pair,
    seed,
)


def small_config(cfg: Config) -> Config:
    """The small queue's database and Redis prefix (item ids repeat across the two)."""
    return dataclasses.replace(
        cfg, pg_db=f"{cfg.pg_db}_small", redis_prefix=f"{cfg.redis_prefix}small:"
    )


def queue_figures(
    cfg: Config, small: int, large: int, checkouts: int, backends: tuple[str, ...]
) -> dict[str, dict[str, Figures]]:
    """``{backend: {str(size): figures}}``; each size's figures carry its seed time."""
    small_cfg = small_config(cfg)
    create_database(cfg, small_cfg.pg_db)
    create_schema(small_cfg)
    seconds = {large: seed(cfg, large), small: seed(small_cfg, small)}
    out: dict[str, dict[str, Figures]] = {}
    for backend in backends:
        big_wm, small_wm = make_wm(cfg, backend), make_wm(small_cfg, backend)
        try:
            for wm in (big_wm, small_wm):
                for _ in range(10):
                    wm.agent.checkout(AGENT)
            on_large, on_small = measure_pair(
                lambda _, wm=big_wm: wm.agent.checkout(AGENT),
                lambda _, wm=small_wm: wm.agent.checkout(AGENT),
                checkouts,
            )
        finally:
            big_wm.close()
            small_wm.close()
        out[backend] = {
            str(size): {**figures, "queued": size, "seed_s": seconds[size]}
            for size, figures in ((small, on_small), (large, on_large))
        }
    return out
