"""Maintenance (beat, every minute): dead-letter, stale orders, key purge, apply recovery."""

from __future__ import annotations

from workmanager.errors import TransientError

from .app import app
from .runtime import get_wm


@app.task(name="workmanager.maintenance.run", autoretry_for=(TransientError,), max_retries=3)
def run() -> dict[str, int]:
    report = get_wm().maintenance.run()
    return {
        "dead_lettered_orders": report.dead_lettered_orders,
        "dead_lettered_items": report.dead_lettered_items,
        "stale_orders": len(report.stale_orders),
        "purged_keys": report.purged_keys,
        "recovered_applies": len(report.recovered_applies),
    }
