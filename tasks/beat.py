"""The beat's tasks, and the one rule for a beat task that cannot run.

``workmanager.leases.sweep`` reclaims expired leases (every ``SWEEP_INTERVAL_SECONDS``);
``workmanager.maintenance.run`` dead-letters, marks stale orders, purges keys and recovers
applies (every minute); ``workmanager.orders.generate`` lets the allocator strategies
propose orders (every 15 minutes). Each is safe on many workers at once.

A beat task never retries through Celery: the next beat is the retry. A retry of Celery's
own came 180 s later, three times, beside the beats' own runs, each failure with a
traceback. So a database or lock store out of reach is one line, and so is a worker whose
shared settings are not the deployment's (it does nothing until they are).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from workmanager import deployment
from workmanager.allocators import ALLOCATOR_ERROR
from workmanager.errors import ConfigurationError, TransientError
from workmanager.saying import one_line

from .app import app
from .runtime import get_wm

log = logging.getLogger("workmanager.worker")

T = TypeVar("T")


def _each_beat(name: str, work: Callable[[], T]) -> T | None:
    """``work()``, or ``None`` and one logged line when it cannot run this beat."""
    try:
        return work()
    except ConfigurationError as exc:
        log.error("%s refused: %s; hint: %s", name, exc.message, exc.hint)
    except TransientError as exc:  # an outage the next beat outlives: a warning
        log.warning("%s skipped: %s; the next beat tries again", name, one_line(exc.message))
    return None


@app.task(name="workmanager.leases.sweep")
def sweep() -> dict[str, int]:
    """Reclaim expired leases in bounded batches."""
    result = _each_beat("sweep", lambda: get_wm().sweeper.sweep())
    if result is None:
        return {"skipped": 1}  # the log says why: not "nothing was expired"
    return {
        "requeued": sum(len(v) for v in result.requeued.values()),
        "failed": sum(result.failed.values()),
    }


@app.task(name="workmanager.maintenance.run")
def maintain() -> dict[str, int]:
    """One maintenance pass."""
    report = _each_beat("maintenance", lambda: get_wm().maintenance.run())
    if report is None:
        return {"skipped": 1}
    return {
        "dead_lettered_orders": report.dead_lettered_orders,
        "dead_lettered_items": report.dead_lettered_items,
        "stale_orders": report.stale_total,
        "purged_keys": report.purged_keys,
        "recovered_applies": len(report.recovered_applies),
    }


#: The deployment-wide hold of a generate run (``deployment.hold``): a ``discover()`` that
#: never returns held a worker slot, and each beat took another (every pool child, every
#: control worker) until nothing else ran. Renewed while the run goes on
#: (``deployment.keep``), it lapses this long after its process died.
GENERATING = "generating"
GENERATE_HOLD_SECONDS = 120.0


@app.task(name="workmanager.orders.generate")
def generate() -> dict[str, int]:
    """Let the registered allocator strategies propose orders; skipped, in one line, while
    a previous run is still going anywhere in the deployment (its hold renewed while it
    runs, given up within two minutes of its process dying). Each request refused is one
    line naming its strategy."""
    wm = get_wm()
    taken = _each_beat(
        "generate", lambda: deployment.hold(wm.db, GENERATING, GENERATE_HOLD_SECONDS)
    )
    if not taken:
        if taken is not None:
            log.error("generate skipped: a previous run is still going (a discover() that hangs?)")
        return {"skipped": 1}
    renewing = deployment.keep(wm.db, GENERATING, GENERATE_HOLD_SECONDS)
    try:
        report = _each_beat("generate", lambda: wm.generator.run())
    finally:
        renewing.set()
        _each_beat("generate", lambda: deployment.let_go(wm.db, GENERATING))
    if report is not None:  # a strategy that raised is logged with its traceback already
        for failure in (e for e in report.errors if e.get("code") != ALLOCATOR_ERROR):
            log.error(
                "generate: %s refused a request of %s [%s]: %s",
                failure.get("strategy"),
                failure.get("type"),
                failure.get("code"),
                failure.get("message"),
            )
    if report is None:
        return {"skipped": 1}
    return {
        "discovered": len(report.discovered),
        "created": report.created,
        "existing": report.existing,
        "errors": len(report.errors),
    }
