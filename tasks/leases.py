"""The expired-lease sweep (beat, every ``SWEEP_INTERVAL_SECONDS``)."""

from __future__ import annotations

from workmanager.errors import TransientError

from .app import app
from .runtime import get_wm


@app.task(name="workmanager.leases.sweep", autoretry_for=(TransientError,), max_retries=3)
def sweep() -> dict[str, int]:
    """Reclaim expired leases in bounded batches; safe on many workers at once."""
    result = get_wm().sweeper.sweep()
    return {
        "requeued": sum(len(v) for v in result.requeued.values()),
        "failed": sum(result.failed.values()),
    }
