"""The WorkManager of this worker process, built once from the environment.

Celery's prefork pool forks after import, so the engine is (re)built lazily in each child,
never shared across a fork. The Celery-backed dispatcher is wired in here.
"""

from __future__ import annotations

import ast
import functools
import logging
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery.signals import beat_init, worker_init

import workmanager.db
from workmanager import Settings, WorkManager, deployment
from workmanager.errors import (
    BrokerRefused,
    ConfigurationError,
    DatabaseMissing,
    Unavailable,
    WorkManagerError,
)

from .broker import check_credentials, check_embedded_directory
from .dispatcher import CeleryDispatcher

if TYPE_CHECKING:
    from workmanager.db.session import Database

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


log = logging.getLogger("workmanager.worker")


def _ours(sender: Any) -> bool:
    """The worker or beat starting is workmanager's (``celery -A tasks``, ``workmanager
    agent``): these hooks are connected for every Celery app in the process, and a host's
    own worker in a process that imported this module was refused for its own queues."""
    from .app import app

    return getattr(sender, "app", None) is app


@worker_init.connect
@beat_init.connect
def _ready_to_work(sender: Any = None, **_: Any) -> None:
    """``celery -A tasks worker|beat`` and ``workmanager agent``: refuse to start when no task
    could run, as ``workmanager serve`` does, rather than take messages off the queue and
    lose them. One line on stderr and exit 1 (``SystemExit``: Celery logs and ignores any
    other exception a signal handler raises) for:

    - a setting that cannot be used (``error [configuration_error]``: an order-type module
      that does not import, an enricher, a metrics driver …): the WorkManager is built
      here, not on the first task, which would have failed every message it took;
    - a schema behind the migrations (``error [schema_outdated]: … run `workmanager db
      upgrade```) or a database that does not exist (no SQLite file: run from another
      directory, or before ``db upgrade``; no PostgreSQL database): ``error
      [unavailable]: no database at …`` and its hint; the same for the embedded
      broker's directory;
    - a broker that refuses the credentials or the virtual host (``error [unavailable]:
      the broker at … refused the credentials/vhost``), where Celery would print its
      traceback (:func:`tasks.broker.check_credentials`);
    - anything else the check meets, which no translation knows: its traceback is logged
      and the worker stops (``error [internal_error]: the start-up check failed: …``),
      since every task would meet it too.

    A database, broker (or Redis) that does not answer yet is not refused: tasks retry on it as on
    any outage. A schema at the head is seen without Alembic (:func:`at_shipped_head`);
    only another answer loads it (:func:`~workmanager.db.migrate.require_head`, which
    decides), so a worker does not hold Alembic, Mako and their migration scripts."""
    if not _ours(sender):
        return
    try:
        wm = get_wm()
        deployment.one_process_only(wm.settings)
        if wm.settings.metrics_driver == "prometheus":
            log.warning(
                "WORK_MANAGER_METRICS_DRIVER=prometheus: this worker's metrics stay in its own"
                " process, where nothing serves them (only `workmanager serve` has /metrics);"
                " use the statsd driver for workers (docs/operations.md#metrics)"
            )
        check_credentials(wm.settings.broker_url)
        db = wm.db
        if not at_shipped_head(db):
            from workmanager.db.migrate import require_head

            require_head(db)
        check_embedded_directory(wm.settings.broker_url)
        deployment.check(db, wm.settings)  # a lease backend, TTL or queue of its own
    except Unavailable as exc:
        if isinstance(exc, (DatabaseMissing, BrokerRefused)):
            _refuse(exc)
        log.warning("not ready at start-up: %s", exc)
    except WorkManagerError as exc:  # settings, schema behind
        _refuse(exc)
    except Exception as exc:  # nothing we know: every task would meet it, so refuse too
        log.exception("start-up check failed")
        _refuse(WorkManagerError(f"the start-up check failed: {type(exc).__name__}: {exc}"))


@worker_init.connect
def _say_without_types(sender: Any = None, **_: Any) -> None:
    """A worker with no order type (``WORK_MANAGER_ORDER_TYPES`` forgotten on its host)
    refuses every order it is sent: said once at start, where the operator looks."""
    if not _ours(sender):
        return
    try:
        wm = get_wm()
    except WorkManagerError:
        return  # said by _ready_to_work
    if not wm.registry.names():
        listed = ",".join(wm.settings.order_types)
        why = f"{listed} registered none" if listed else "is empty"
        log.warning(
            "no order types are registered in this worker (WORK_MANAGER_ORDER_TYPES %s):"
            " it refuses every order it is sent; list the modules that register them, as"
            " for every process of the deployment",
            why,
        )


@worker_init.connect
def _refuse_unknown_queues(sender: Any = None, **_: Any) -> None:
    """``-Q`` naming a queue nothing is sent to (``-Q workmanger``, or the default name on a
    host whose deployment renamed its queues) consumed it, empty, for ever, while the
    work waited on the real one: refused at start-up, one line, exit 1. Beside a queue
    that is sent to, one is read as an old queue being drained (docs/configuration.md,
    a renamed queue's step): a warning line, not a refusal."""
    queues = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    selected = getattr(queues, "consume_from", None)
    if not selected or not _ours(sender):
        return
    try:
        settings = get_wm().settings
    except WorkManagerError:
        return  # said by _ready_to_work
    unknown = unknown_queues(selected, settings, sender.app.conf.worker_direct)
    if unknown and len(unknown) < len(list(selected)):
        for name in unknown:
            log.warning("-Q %s: no workmanager task is sent to it; read as an old queue", name)
    elif unknown:
        _refuse(
            ConfigurationError(
                f"-Q {','.join(unknown)}: no workmanager task is sent to"
                f" {'this queue' if len(unknown) == 1 else 'these queues'}"
                if any(unknown)
                else '-Q names no queue (an empty value: an unset variable, `-Q "$X"`?)',
                hint=(
                    f"the control queue is {settings.control_queue!r}"
                    f" (WORK_MANAGER_CONTROL_QUEUE), the apply queue"
                    f" {settings.apply_queue!r} (WORK_MANAGER_APPLY_QUEUE); agents'"
                    f" queues start with {settings.agent_queue_prefix!r}; or leave -Q"
                    " out to consume the control and apply queues"
                ),
            )
        )


def unknown_queues(names: Iterable[str], settings: Settings, worker_direct: bool) -> list[str]:
    """The queues in ``names`` that no task of this deployment is sent to."""
    return [
        name
        for name in names
        if name not in (settings.control_queue, settings.apply_queue)
        and not name.startswith(settings.agent_queue_prefix)
        and not (worker_direct and name.endswith(".dq"))
    ]


def _refuse(exc: WorkManagerError) -> None:
    # The process's own stderr: beat has redirected sys.stderr into its log by now.
    print(exc.text(), file=sys.__stderr__ or sys.stderr, flush=True)
    raise SystemExit(1) from exc


#: Where Alembic records the revision (``workmanager.db.migrate.VERSION_TABLE``).
VERSION_TABLE = "alembic_version"
MIGRATION_SCRIPTS = Path(workmanager.db.__file__).parent / "migrations" / "versions"


#: The assignments of a migration script that place it in the history.
_PLACING = ("revision", "down_revision", "branch_labels", "depends_on")


def _placing(script: Path) -> dict[str, object]:
    """A script's :data:`_PLACING` assignments, as literals (an ``ast`` node when one is
    not a literal)."""
    said: dict[str, object] = {}
    for node in ast.parse(script.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in _PLACING:
            try:
                said[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError):
                said[target.id] = value
    return said


@functools.cache
def shipped_heads() -> frozenset[str]:
    """The heads of the package's migration scripts, read from their ``revision`` and
    ``down_revision`` assignments without importing Alembic (a test holds them equal to
    Alembic's). Empty when a script does not say them plainly (then Alembic decides)."""
    revisions: set[str] = set()
    downs: set[str] = set()
    for script in sorted(MIGRATION_SCRIPTS.glob("*.py")):
        said = _placing(script)
        revision, down = said.get("revision"), said.get("down_revision")
        down = (down,) if isinstance(down, str) else () if down is None else down
        if (
            not isinstance(revision, str)
            or not isinstance(down, tuple | list)
            or not all(isinstance(d, str) for d in down)
            or said.get("branch_labels")
            or said.get("depends_on")
        ):
            return frozenset()
        revisions.add(revision)
        downs.update(down)
    return frozenset(revisions - downs)


def at_shipped_head(db: Database) -> bool:
    """Whether the revisions recorded in ``db`` are exactly :func:`shipped_heads`. False
    when they differ or cannot be read plainly (then ``require_head`` decides, with
    Alembic); a database that does not answer raises
    :class:`~workmanager.errors.Unavailable`, as ``require_head`` would."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import SQLAlchemyError

    from workmanager.db.session import unavailable_when_down

    heads = shipped_heads()
    if not heads:
        return False
    try:
        with unavailable_when_down(db.url), db.engine.connect() as connection:
            if not inspect(connection).has_table(VERSION_TABLE):
                return False
            rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
            recorded = {str(row[0]) for row in rows}
    except SQLAlchemyError:
        return False
    return recorded == heads
