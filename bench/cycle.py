"""The full agent cycle: ``wm.agent.checkout`` then ``wm.agent.submit``, per backend.

Each cycle leases the next item of a seeded queue and submits a result that the order
type's schema validates, so it is the whole path an agent takes for one item, minus
the agent's own work.
"""

from __future__ import annotations

import time
from typing import Any

from .common import (
    AGENT,
    RESULT,
    Config,
    Figures,
    figures,
    make_wm,
    measure,
    measure_pair,
    seed,
)
from .floor import Bare


def cycle_figures(
    cfg: Config, backend: str, n: int, bare: Bare | None = None
) -> tuple[dict[str, Figures], dict[str, Figures]]:
    """n checkout → submit cycles, and the submit call alone timed inside them; with
    ``bare``, the cycle's floor too, measured in alternating chunks with it."""
    seed(cfg, n + 10)
    wm = make_wm(cfg, backend)
    submits: list[float] = []

    def one(_: int) -> None:
        lease: Any = wm.agent.checkout(AGENT)
        if lease is None:
            raise RuntimeError(f"{backend}: a checkout found no item in a full queue")
        t = time.perf_counter()
        wm.agent.submit(lease, RESULT)
        submits.append(time.perf_counter() - t)

    try:
        for i in range(10):  # warm-up, not measured
            one(i)
        submits.clear()
        floors = {}
        if bare is None:
            cycle = measure(one, n)
        else:
            cycle, floors["cycle"] = measure_pair(one, bare.floor(backend, "cycle"), n)
        # Submit's throughput if it were called back to back at its measured latency.
        submit = figures(submits, sum(submits))
    finally:
        wm.close()
    return {"cycle": cycle, "submit": submit}, floors
