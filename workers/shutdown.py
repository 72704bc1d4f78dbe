"""An agent's graceful end (SIGTERM, ``celery control shutdown``): its handlers get
``WORK_MANAGER_AGENT_SHUTDOWN_GRACE_SECONDS`` to finish while their leases heartbeat on;
past it the leases still held are released (the items requeued at once, the attempt
given back) and the process ends.

On ``--pool prefork`` the handlers run in pool children, whose leases this process does
not hold: they are this agent's leases in the database, released by the operator's rule
(event ``lease_released``) once the children are ended. The grace passed unseen there,
and the children ran on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from workmanager.errors import WorkManagerError

if TYPE_CHECKING:
    from celery import Celery

    from .agent import AgentConsumer

log = logging.getLogger("workmanager.agent")


def install(app: Celery, consumer: AgentConsumer, pool: str = "threads") -> None:
    """Run :func:`begin` when the Celery worker starts its shutdown: on a signal
    (``worker_shutting_down``), and on ``celery control shutdown``, which sends no signal
    and only stops the worker, whose pool then waited for every handler without a limit
    (a worker bootstep, closed first whatever ended the worker)."""
    from celery import bootsteps
    from celery.signals import worker_ready, worker_shutting_down

    started: list[threading.Thread] = []
    restarting = threading.Event()

    def on_shutdown(*_: Any, **__: Any) -> None:
        consumer.stopping.set()
        if not started:  # a second SIGTERM does not start a second countdown
            grace = consumer.wm.settings.agent_shutdown_grace_seconds
            log.info("shutdown: stopped taking messages; handlers have %.0fs to finish", grace)
            ending = _restart if restarting.is_set() else os._exit
            started.append(begin(consumer, grace, ending, children=pool == "prefork"))

    worker_shutting_down.connect(on_shutdown, weak=False)
    worker_ready.connect(lambda **_: _hear_restarts(restarting), weak=False)
    closing = {"close": on_shutdown, "__module__": __name__}
    step = type("AgentGrace", (bootsteps.StartStopStep,), closing)
    app.steps["worker"].add(step)


def _hear_restarts(restarting: threading.Event) -> None:
    """Note a SIGHUP (Celery's restart: warm shutdown, then the command run again from
    an exit function), so a grace that ends the process restarts it instead: it ended
    the process with ``os._exit``, which runs no exit function, and the agent stayed down.
    Celery installs its SIGHUP handler only when started without a terminal."""
    previous = signal.getsignal(signal.SIGHUP)
    if not callable(previous):
        return

    def on_hup(signum: int, frame: Any) -> None:
        restarting.set()
        previous(signum, frame)

    with contextlib.suppress(ValueError):  # not the main thread: Celery's handler stays
        signal.signal(signal.SIGHUP, on_hup)


def _restart(code: int) -> None:
    """Run the agent's command again in this process, as Celery's SIGHUP restart does."""
    from celery.apps.worker import _reload_current_worker

    _reload_current_worker()


def begin(
    consumer: AgentConsumer, grace: float, exit_process: Any = os._exit, children: bool = False
) -> threading.Thread:
    """Start the graceful end (from a thread): after ``grace`` seconds (the process ends
    before then once its handlers are done), release every lease still held and end the
    process (``exit_process``: :func:`os._exit`, or the restart after a SIGHUP)."""

    def held() -> list[Any]:
        if not children:
            return consumer.heartbeats.held()
        from workmanager.reads.leases import LeaseSelector  # the operator's rule
        from workmanager.services.lease_admin import LeaseAdmin

        return LeaseAdmin(consumer.wm.ctx).held(LeaseSelector(agent_id=consumer.agent.id))

    def run() -> None:
        # the whole grace, whatever is held now: a handler whose checkout was under way
        # when the signal came holds nothing yet, and ran on without a limit
        time.sleep(grace)
        still = held()
        if not still:
            return  # every handler finished: Celery's warm shutdown ends the process
        log.warning(
            "shutdown: %d handler(s) still running after %.0fs; releasing their leases",
            len(still),
            grace,
        )
        if children:
            _end_children_and_release(consumer)
        for lease in [] if children else still:
            try:
                consumer.wm.agent.release(lease, agent=consumer.agent)
                log.warning("shutdown: released %s", lease.item_id)
            except WorkManagerError as exc:
                log.warning("shutdown: could not release %s: %s", lease.item_id, exc)
        logging.shutdown()
        exit_process(0)

    thread = threading.Thread(target=run, name="wm-shutdown", daemon=True)
    thread.start()
    return thread


def _end_children_and_release(consumer: AgentConsumer) -> None:
    """End the pool children first (a handler must not submit past its release), then
    release what they held."""
    import billiard.process

    from workmanager.reads.leases import LeaseSelector
    from workmanager.services.lease_admin import LeaseAdmin

    for child in billiard.process.active_children():
        with contextlib.suppress(ProcessLookupError):  # gone meanwhile
            os.kill(child.pid, signal.SIGKILL)
    try:
        done = LeaseAdmin(consumer.wm.ctx, consumer.agent.actor).release(
            LeaseSelector(agent_id=consumer.agent.id)
        )
        for change in done.changes:
            log.warning("shutdown: released %s (%s)", change["item_id"], change["outcome"])
    except WorkManagerError as exc:
        log.warning("shutdown: could not release the children's leases: %s", exc)
