"""The WorkManager of this worker process, built once from the environment.

Celery's prefork pool forks after import, so the engine is (re)built lazily in each child,
never shared across a fork. The Celery-backed dispatcher is wired in here.
"""

from __future__ import annotations

import threading

from celery.signals import worker_process_init

from workmanager import Settings, WorkManager

from .dispatcher import CeleryDispatcher

_lock = threading.Lock()
_wm: WorkManager | None = None


def get_wm() -> WorkManager:
    global _wm
    if _wm is None:
        with _lock:
            if _wm is None:
                from .app import app

                wm = WorkManager(Settings.from_env())
                wm.dispatcher = CeleryDispatcher(app, wm.settings)
                _wm = wm
    return _wm


def set_wm(wm: WorkManager | None) -> None:
    """Install a WorkManager (in-process test workers, the demo) or forget it."""
    global _wm
    with _lock:
        _wm = wm


@worker_process_init.connect
def _fresh_after_fork(**_: object) -> None:
    global _wm
    if _wm is not None:
        _wm.db.engine.dispose(close=False)
