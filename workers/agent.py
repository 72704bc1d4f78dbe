"""Agents as Celery consumers of ``agents.<type>``.

    python -m workers.agent --type T --handler pkg.mod:callable [--agent-id ID]
                            [--concurrency N] [--pool threads|prefork|solo]

(``workmanager agent`` runs this.) Per message: lease the item it names through the agent
API module (skip it when another agent holds it), heartbeat in the background while the
handler runs, submit the returned dict, and report an exception as ``fail`` (retryable).
A result the service refuses for good (``validation_failed``, ``malformed_json``, …) is
logged in one line and reported as ``fail`` with its details, not retryable.

SIGTERM (or Ctrl-C): Celery's warm shutdown stops taking messages; the handlers running
get ``WORK_MANAGER_AGENT_SHUTDOWN_GRACE_SECONDS`` to finish (their leases heartbeat on);
the leases still held then are released (requeued and announced again, the attempt given
back) and the process exits, leaving its unfinished messages unacknowledged.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from celery import Celery, Task
from celery.signals import worker_init

from workmanager import Settings, WorkManager
from workmanager.db.session import display_url
from workmanager.errors import (
    ConfigurationError,
    LeaseConflict,
    LeaseExpired,
    NotFound,
    RateLimited,
    TransientError,
    WorkManagerError,
)
from workmanager.jsonvalues import failure_text
from workmanager.states import LEASABLE_ORDER_STATES, ItemState
from workmanager.types import AgentInfo
from workmanager.usercode import stopped_by_signal

from . import shutdown
from .handlers import (
    HandlerRaised,
    Heartbeats,
    HookFailed,
    Refused,
    load_handler,
    run_handler,
)
from .identity import RUNTIME_PREFIX, checked_identity

log = logging.getLogger("workmanager.agent")

#: How long a message waits before trying again when a lease limit refused its item.
LIMITED_RETRY_SECONDS = 1.0


def default_agent_id() -> str:
    return f"agent-{socket.gethostname()}-{os.getpid()}"


class AgentConsumer:
    """What one ``workmanager.agents.<type>`` message does."""

    def __init__(
        self, wm: WorkManager, handler: Any, agent: AgentInfo, order_type: str | None = None
    ) -> None:
        """``order_type``: the one type this consumer works (``None``: any, for tests)."""
        self.wm, self.handler, self.agent, self.order_type = wm, handler, agent, order_type
        self.every = wm.settings.heartbeat_interval
        self.heartbeats = Heartbeats(wm, agent, self.every)
        #: Set when the process's shutdown begins (``shutdown.install``): no handler starts.
        self.stopping = threading.Event()

    def handle(self, item_id: uuid.UUID) -> tuple[str, float]:
        """Returns (outcome, retry-after seconds); the delay is > 0 only for ``later``.
        Over a checkout rate limit the message waits (``later``) the ``Retry-After`` the
        limiter gave: the item stays queued, nothing is marked failed."""
        if self.stopping.is_set():  # the shutdown began: the item is another agent's
            return "later", 0.0
        try:
            lease = self.wm.agent.checkout(self.agent, type=self.order_type, item_id=item_id)
        except RateLimited as exc:
            log.info("checkout of %s rate limited; again in %ss", item_id, exc.retry_after)
            return "later", float(exc.retry_after)
        if lease is not None and self.stopping.is_set():
            # the shutdown began during the checkout: no handler starts (one did, and ran
            # past the grace, which it began without)
            return self.give_back(lease, "the agent is shutting down"), 0.0
        if lease is not None:
            return self._work(lease), 0.0
        return self._not_leasable(item_id)

    def _not_leasable(self, item_id: uuid.UUID) -> tuple[str, float]:
        """Why the item could not be leased: gone, held or done (skip); backing off or held
        back by a lease limit (try again later)."""
        try:
            item = self.wm.queries.item(item_id)
        except NotFound:  # deleted meanwhile, or never in this agent's database
            log.warning(
                "item %s is not in this agent's database (%s): deleted, or announced by a"
                " process on another database (is WORK_MANAGER_DATABASE_URL the deployment's?)",
                item_id,
                display_url(self.wm.settings.database_url),
            )
            return "missing", 0.0
        if self.order_type is not None and item["order_type"] != self.order_type:
            log.error(
                "item %s refused [validation_failed]: it is of type %r, not this agent's %r"
                " (a message sent to the wrong agents' queue)",
                item_id,
                item["order_type"],
                self.order_type,
            )
            return "refused", 0.0
        if item["state"] != ItemState.QUEUED or not self._order_leasable(item["order_id"]):
            return "skipped", 0.0  # taken, done, or its order failed: the retry re-announces
        wait = LIMITED_RETRY_SECONDS  # queued and due, yet refused: a lease limit was reached
        if item["available_at"]:
            due = datetime.fromisoformat(item["available_at"].replace("Z", "+00:00"))
            wait = max(wait, (due - datetime.now(UTC)).total_seconds())
        return "later", wait

    def _order_leasable(self, order_id: str) -> bool:
        try:
            state = self.wm.queries.order_state(uuid.UUID(order_id))
        except NotFound:
            return False
        return state in LEASABLE_ORDER_STATES

    def _work(self, lease: Any) -> str:
        with self.heartbeats.holding(lease) as current:
            try:
                return run_handler(self.wm, self.handler, lease, self.agent, current)
            except (LeaseConflict, LeaseExpired) as exc:
                log.warning("lease on %s lost: %s", lease.item_id, exc.message)
                return "lost"
            except NotFound as exc:
                if (exc.details or {}).get("item_id") != str(lease.item_id):
                    return self._handler_failed(lease, exc)  # the handler's own lookup
                # the item itself is gone: its order deleted (ops prune, forget), or the
                # database restored from a backup older than it; nothing to report to
                log.warning("item %s is gone: %s; its work is dropped", lease.item_id, exc)
                return "lost"
            except HookFailed as crash:
                log.error(
                    "the order type's check failed on %s [%s]: %s (the item is retried)",
                    lease.item_id,
                    crash.error.code,
                    crash.summary(),
                )
                self._fail(lease, crash.report(), retryable=True)
                return "failed"
            except Refused as refusal:
                # the handler returned; the service refused its output, and would again
                code, said = refusal.error.code, refusal.summary()
                log.error("submit of %s refused [%s]: %s", lease.item_id, code, said)
                self._fail(lease, refusal.report(), retryable=False)
                return "refused"
            except TransientError as exc:  # the handler's output not delivered in time
                log.error(
                    "could not deliver the work on %s: %s (the item is retried)",
                    lease.item_id,
                    exc.message,
                )
                self._fail(lease, {"code": exc.code, "message": exc.message}, retryable=True)
                return "failed"
            except HandlerRaised as raised:
                return self._handler_failed(lease, raised.error)
            except BaseException as exc:
                if stopped_by_signal(exc):  # a pool child stopped: not the handler's failure
                    self.give_back(lease, "the process is being stopped")
                    raise
                # whatever the handler raises is its failure, KeyboardInterrupt and trio's
                # or gevent's cancellations too: let through, it hung a threads-pool slot
                # for good (no log, no fail, the lease held to its TTL) and ended a
                # solo-pool agent
                return self._handler_failed(lease, exc)

    def give_back(self, lease: Any, why: str) -> str:
        """Release ``lease`` unworked (the attempt given back, the item announced again):
        the process is ending, which is no failure of the item's."""
        try:
            self.wm.agent.release(lease, agent=self.agent)
            log.warning("released %s unfinished: %s", lease.item_id, why)
        except WorkManagerError as exc:
            log.warning("could not release %s (%s): %s", lease.item_id, why, exc)
        return "released"

    def _handler_failed(self, lease: Any, exc: BaseException) -> str:
        log.error("handler failed on %s", lease.item_id, exc_info=exc)
        code = exc.code if isinstance(exc, WorkManagerError) else type(exc).__name__
        self._fail(lease, {"code": code, "message": failure_text(exc)}, retryable=True)
        return "failed"

    def _fail(self, lease: Any, error: dict[str, str], retryable: bool) -> None:
        """Report ``fail``; a refusal of the report is logged (the sweep reclaims the
        item when its lease expires)."""
        try:
            self.wm.agent.fail(lease, error, retryable=retryable, agent=self.agent)
        except WorkManagerError as failed:
            log.warning("could not report failure on %s: %s", lease.item_id, failed)


def register_agent_task(app: Celery, order_type: str, consumer: AgentConsumer) -> Task:
    """Register ``workmanager.agents.<type>`` on ``app`` to run ``consumer``.

    On ``app`` alone (``shared=False``): a shared task would be added to every Celery app
    the process finalizes afterwards, bound to this consumer, and a second registration
    (another consumer) would then collide with it there (``DuplicateTaskNameWarning``).
    Delivery and retries as the order tasks' (``tasks.orders``)."""
    from tasks.orders import STATEFUL, TRANSIENT, task_id_arg

    @app.task(
        name=f"workmanager.agents.{order_type}", shared=False, bind=True, **STATEFUL, **TRANSIENT
    )
    def agent_task(self: Task, item_id: str) -> str:
        iid = task_id_arg(self.name, "item_id", item_id)
        if iid is None:
            return "refused"
        outcome, delay = consumer.handle(iid)
        if outcome == "later":
            raise self.retry(countdown=delay)
        return outcome

    return agent_task


def build(
    order_type: str, handler_ref: str, agent_id: str | None, wm: WorkManager | None = None
) -> tuple[Celery, AgentConsumer]:
    from tasks.app import app
    from tasks.runtime import get_wm, set_wm
    from tasks.tracing import install

    # before the WorkManager's engine exists, so its connections are traced too
    install(wm.settings if wm is not None else Settings.from_env(), "workmanager-agent")
    if wm is not None:
        set_wm(wm)
    manager = get_wm()
    manager.registry.get(order_type)  # fail fast on an unknown type
    if not manager.settings.announces(order_type):  # it would wait on an empty queue
        listed = ",".join(manager.settings.announced_types) or "empty"
        raise ConfigurationError(
            f"--type {order_type}: its items are not announced to consumer agents"
            f" (WORK_MANAGER_ANNOUNCED_TYPES is {listed})",
            hint=f"add {order_type} to WORK_MANAGER_ANNOUNCED_TYPES (or `*`) on every process"
            " of the deployment",
        )
    agent = AgentInfo(
        id=agent_id or default_agent_id(),
        name=manager.settings.agent_name,
        version=manager.settings.agent_version,
        model_name=manager.settings.agent_model,
        runtime=f"{RUNTIME_PREFIX}{manager.settings.agent_runtime}",
    )
    checked_identity(agent)
    consumer = AgentConsumer(manager, load_handler(handler_ref), agent, order_type)
    register_agent_task(app, order_type, consumer)
    return app, consumer


def at_least_one(text: str) -> int:
    """``--concurrency``: a whole number, 1 or more (Celery reads 0 as "one per CPU")."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return number


def refuse_a_twin(app: Celery, node: str) -> None:
    """On RabbitMQ a second worker of one node name (an agent id given twice on a host)
    ended with Celery's traceback (``ResourceLocked`` on the node's control queue): one
    line, asked before it starts. Other brokers let both run (Celery warns)."""
    if not str(app.conf.broker_url).startswith(("amqp", "pyamqp")):
        return
    try:
        replies = app.control.ping(destination=[node], timeout=0.5)
    except Exception:  # the broker out of reach: the worker's own start says so
        return
    if replies:
        raise ConfigurationError(
            f"--agent-id: an agent named {node} runs already on this host",
            hint="give each agent process its own --agent-id, or leave it out (agent-<host>-<pid>)",
        )


@contextmanager
def stdout_to_stderr(on: bool) -> Iterator[None]:
    """``--json``: stdout carries JSON only. Celery prints its banner and its shutdown
    lines on the process's stdout (``sys.__stdout__``), so while the worker runs file
    descriptor 1 is the one of stderr."""
    if not on:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """Run the agent's Celery worker; its exit status (not 0 after Celery's fatal
    "Unrecoverable error", e.g. a queue the broker user may not declare)."""
    parser = argparse.ArgumentParser(prog="workmanager agent", description=__doc__)
    parser.add_argument("--type", required=True, dest="order_type")
    parser.add_argument("--handler", required=True)
    parser.add_argument("--agent-id")
    parser.add_argument("--concurrency", type=at_least_one, default=1)
    parser.add_argument("--pool", default="threads", choices=["threads", "prefork", "solo"])
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--json", action="store_true", help="errors as JSON")
    args = parser.parse_args(argv)
    app, consumer = build(args.order_type, args.handler, args.agent_id)
    if args.agent_id:  # the default id is this process's own
        refuse_a_twin(app, f"{consumer.agent.id}@{socket.gethostname()}")
    shutdown.install(app, consumer, args.pool)
    queue = consumer.wm.settings.agent_queue(args.order_type)
    worker = ["worker", "-Q", queue, "-c", str(args.concurrency), "-P", args.pool]
    worker += ["-n", f"{consumer.agent.id}@%h", "--loglevel", args.loglevel]
    # app.worker_main returns nothing: the worker's own exit status (1 after Celery's
    # "Unrecoverable error") is read from the worker it ran, which worker_init names.
    started: list[Any] = []

    def keep(sender: Any = None, **_: Any) -> None:
        started.append(sender)

    worker_init.connect(keep, weak=False)
    try:
        with stdout_to_stderr(args.json):
            app.worker_main([*worker, "--without-gossip", "--without-mingle"])
    finally:
        worker_init.disconnect(keep)
    if not started:  # the worker was never built: nothing ran
        return 1
    return int(getattr(started[-1], "exitcode", None) or 0)


def run(argv: list[str] | None = None) -> int:
    """:func:`main`, a domain error reported as the console reports it (``--json``: the
    JSON envelope too) with exit status 1, not a traceback. The console's renderer (click,
    rich, every command's module) is imported only to report one: a running consumer
    never needs it."""
    try:
        return main(argv)
    except WorkManagerError as exc:
        from workmanager.cli.render import report_error

        args = sys.argv[1:] if argv is None else argv
        report_error(exc, "--json" in args)
        return 1


if __name__ == "__main__":
    # Celery restarts a worker on SIGHUP by running ``sys.executable + sys.argv`` again:
    # ``python …/workers/agent.py`` then failed on its relative imports and the agent was
    # gone. The arguments say how it was started, as a module.
    given = sys.argv[1:]
    sys.argv[:] = ["-m", "workers.agent", *given]
    sys.exit(run(given))
