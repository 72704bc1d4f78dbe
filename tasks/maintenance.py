"""Maintenance (beat, every minute): dead-letter, stale orders, key purge, apply recovery."""

from __future__ import annotations

import logging

from workmanager.errors import TransientError

from .app import app
from .runtime import get_wm

log = logging.getLogger("workmanager.worker")


@app.task(name="workmanager.maintenance.run")
def run() -> dict[str, int]:
    """One maintenance pass. The database out of reach is one line: the next beat is the
    retry."""
    try:
        report = get_wm().maintenance.run()
    except TransientError as exc:
        log.error("maintenance skipped: %s; the next beat tries again", exc.message)
        return {}
    return {
        "dead_lettered_orders": report.dead_lettered_orders,
        "dead_lettered_items": report.dead_lettered_items,
        "stale_orders": len(report.stale_orders),
        "purged_keys": report.purged_keys,
        "recovered_applies": len(report.recovered_applies),
    }
