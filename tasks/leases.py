"""The expired-lease sweep (beat, every ``SWEEP_INTERVAL_SECONDS``)."""

from __future__ import annotations

import logging

from workmanager.errors import ConfigurationError, TransientError

from .app import app
from .runtime import get_wm

log = logging.getLogger("workmanager.worker")


@app.task(name="workmanager.leases.sweep")
def sweep() -> dict[str, int]:
    """Reclaim expired leases in bounded batches; safe on many workers at once. A worker
    whose shared settings are not the deployment's reclaims nothing: one line a beat. A
    database or lock store out of reach is one line too: the next beat is the retry (a
    retry of Celery's own came 180 s later, three times, beside the beats' own runs)."""
    try:
        result = get_wm().sweeper.sweep()
    except ConfigurationError as exc:
        log.error("sweep refused: %s; hint: %s", exc.message, exc.hint)
        return {"requeued": 0, "failed": 0}
    except TransientError as exc:
        log.error("sweep skipped: %s; the next beat tries again", exc.message)
        return {"requeued": 0, "failed": 0}
    return {
        "requeued": sum(len(v) for v in result.requeued.values()),
        "failed": sum(result.failed.values()),
    }
