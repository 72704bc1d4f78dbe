"""The WorkManager of this worker process, built once from the environment.

Celery's prefork pool forks after import, so the engine is (re)built lazily in each child,
never shared across a fork. The Celery-backed dispatcher is wired in here.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from celery.signals import worker_init, worker_process_init

from workmanager import Settings, WorkManager
from workmanager.errors import SchemaBehind, Unavailable, WorkManagerError

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


log = logging.getLogger("workmanager.worker")


@worker_init.connect
def _schema_at_head(**_: Any) -> None:
    """``celery -A tasks worker`` and ``workmanager agent``: refuse to start on a schema
    behind the migrations, as ``workmanager serve`` does. One line on stderr, ``error
    [schema_outdated]: … run `workmanager db upgrade```, and exit 1 (``SystemExit``: Celery
    logs and ignores any other exception a signal handler raises). A database that does
    not answer yet is not refused: tasks retry on it as on any outage."""
    from workmanager.db.migrate import require_head
    from workmanager.db.session import Database

    built = _wm
    try:
        db = built.db if built is not None else Database(Settings.from_env().database_url)
        try:
            require_head(db)
        finally:
            if built is None:
                db.dispose()
    except SchemaBehind as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr, flush=True)
        raise SystemExit(1) from exc
    except Unavailable as exc:
        log.warning("database not ready at start-up: %s", exc)
    except WorkManagerError:
        pass  # bad settings: said by the first task that builds the WorkManager
