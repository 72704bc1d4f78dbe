"""Order tasks: create, check_auto_approval, apply. Thin: ids in, one service
call, transient errors retried."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from celery import Task

from workmanager import deployment
from workmanager.errors import (
    ApplyFailed,
    DedupeKeyReused,
    IllegalStateTransition,
    NotFound,
    PermanentError,
    TransientError,
    ValidationFailed,
)
from workmanager.saying import logged
from workmanager.services.proposals import keyed_id
from workmanager.services.refusals import note_reused_key
from workmanager.types import Actor

from .app import app
from .runtime import get_wm

log = logging.getLogger("workmanager.tasks")

#: Who may ask for an order (SPEC §3).
ACTOR_TYPES = ("user", "agent", "system")
#: Orders created by a task with no order id take uuid5(TASK_NAMESPACE, task id).
TASK_NAMESPACE = uuid.UUID("0b7c5a52-3f0e-4c8e-9d55-2f4a8e1c6b90")
STATEFUL = {"acks_late": True, "reject_on_worker_lost": True}
#: A run that found the apply claimed tries again this long after the claim would lapse.
CLAIM_SLACK_SECONDS = 1.0
TRANSIENT = {
    "autoretry_for": (TransientError,),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": None,
}


def task_id_arg(task: str, name: str, value: Any) -> uuid.UUID | None:
    """An id argument of a task message (the names are public: other services send them):
    its UUID, or ``None`` after one logged line naming the task, the argument and the
    value, when it is not one (the message is then done: no retry can mend it)."""
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    log.error(
        "%s refused [validation_failed]: %s must be a UUID string, got %s",
        task, name, logged(repr(value)),
    )  # fmt: skip
    return None


def requester(kind: Any, id_: Any) -> Actor:
    """Who asked for an order (SPEC §3: ``user``, ``agent`` or ``system``)."""
    if kind not in ACTOR_TYPES:
        raise ValidationFailed.at("requested_by_type", "one of user, agent, system", "enum")
    if id_ is not None and not isinstance(id_, str):
        raise ValidationFailed.at("requested_by_id", "a string", "type")
    return Actor(kind, id_ or kind)  # its length and characters: check_proposal's


@app.task(name="workmanager.orders.create", bind=True, **STATEFUL, **TRANSIENT)
def create(
    self: Task,
    type: str = "",
    payload: Any = None,
    priority: int = 0,
    meta: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    order_id: str | None = None,
    requested_by_type: str = "system",
    requested_by_id: str | None = None,
    tenant_id: str | None = None,
    *extra: Any,
    **unknown: Any,
) -> str | None:
    """Validate, create and plan an order. A redelivered message finds its order already
    there (a sender that names no ``order_id`` gets one derived from the task id) and
    announces its still-queued items again, in case the first run died before it did.
    A proposal the service refuses (unknown type, a payload failing the schema) is
    recorded as a ``failed`` order under the id the producer got, with the error, so that
    id still resolves; a dedupe key already used for another type or payload creates
    nothing (the key's id already names the other order) and the task returns ``None``.
    A message sent by hand without ``type`` or ``payload``, or with arguments this task
    does not take (more positional ones than its nine, or unknown names), is refused the
    same way (it raised a TypeError before this ran, and the proposal was lost); one
    argument given twice is refused by the guard (``tasks/guard.py``), in one logged line
    (``tasks/logs.py``).
    A message delivered again (its worker or pool child died) plans at most once more:
    when planning ends the process each time, the order is left ``failed``
    (``OrderService.note_redelivery``)."""
    wm = get_wm()
    if order_id is None and dedupe_key is None and isinstance(self.request.id, str):
        order_id = str(uuid.uuid5(TASK_NAMESPACE, self.request.id))
    oid = None if order_id is None else task_id_arg("orders.create", "order_id", order_id)
    if order_id is not None and oid is None:
        return None  # no id to record a refusal under: the line above is the record
    requested_by = Actor.system()
    try:
        _no_stray_arguments(extra, unknown)
        requested_by = requester(requested_by_type, requested_by_id)
        lost = _lost_before(
            self,
            oid or dedupe_key,
            type,
            payload,
            priority=priority,
            meta=meta,
            requested_by=requested_by,
            tenant_id=tenant_id,
        )
        if lost is not None:
            return lost
        try:
            proposal = wm.orders.propose(
                type,
                payload,
                priority=priority,
                meta=meta,
                dedupe_key=dedupe_key,
                order_id=oid,
                requested_by=requested_by,
                tenant_id=tenant_id,
            )
        finally:
            _planned(self, oid or dedupe_key)
    except DedupeKeyReused as exc:
        wm.orders.count_refused(type, exc)
        taken = oid or keyed_id(dedupe_key)
        noted = taken is not None and note_reused_key(
            wm.ctx,
            wm.orders.store,
            taken,
            dedupe_key,
            exc,
            {
                "type": type,
                "payload": payload,
                "tenant_id": tenant_id,
                "requested_by": requested_by,
                "task_id": self.request.id,
            },
        )
        where = f"written into order {taken}'s history" if noted else "nothing recorded"
        log.error(
            "orders.create of %.200r refused [%s], %s: %s",
            type,
            exc.code,
            where,
            logged(exc.message),
        )
        return None
    except PermanentError as exc:
        keyed = keyed_id(dedupe_key)
        try:
            refused = wm.orders.refuse(
                exc,
                type,
                payload,
                order_id=oid or keyed or uuid.uuid4(),
                priority=priority,
                meta=meta,
                requested_by=requested_by,
                tenant_id=tenant_id,
            )
        except PermanentError as unstorable:  # e.g. a NUL in the type: not even storable
            log.error(
                "orders.create of %.200r refused [%s]: %s; the refusal could not be recorded"
                " [%s]: %s",
                type,
                exc.code,
                logged(exc.one_line()),
                unstorable.code,
                logged(unstorable.message),
            )
            return None
        log.error(
            "orders.create of %.200r refused [%s] (order %s, recorded failed): %s",
            type,
            exc.code,
            refused["id"],
            logged(exc.one_line()),
        )
        return str(refused["id"])
    if not proposal.created:
        wm.maintenance.announce_queued(uuid.UUID(proposal.order["id"]))
    return str(proposal.order["id"])


def _no_stray_arguments(extra: tuple[Any, ...], unknown: dict[str, Any]) -> None:
    """Refuse arguments ``create`` does not take: more positional ones than its nine, or
    unknown names (a message sent by hand)."""
    if extra:
        raise ValidationFailed.at(
            "args",
            f"at most 9 positional arguments, got {9 + len(extra)}",
            "maxItems",
            "too many positional arguments for workmanager.orders.create",
        )
    if unknown:
        raise ValidationFailed.at(
            ", ".join(sorted(unknown)),
            "not an argument of workmanager.orders.create",
            "additionalProperties",
            f"unknown arguments: {', '.join(sorted(unknown))}",
        )


#: How long a redelivered create message's hold on its order's planning lasts unless
#: renewed (every third of it while it plans), how long another delivery waits for it,
#: and when that one tries again if it is still held.
PLANNING_HOLD_SECONDS = 15.0
PLANNING_WAIT_SECONDS = 20.0
PLANNING_BUSY_RETRY_SECONDS = 30


def _redelivered_target(task: Task, target: Any) -> uuid.UUID | None:
    """The order id a redelivered create message plans (``target``: the id, or the dedupe
    key whose id it is); ``None`` for a first delivery."""
    if not (task.request.delivery_info or {}).get("redelivered"):
        return None
    if isinstance(target, str):
        target = keyed_id(target)
    return target if isinstance(target, uuid.UUID) else None


def _lost_before(task: Task, target: Any, type: Any, payload: Any, **proposal: Any) -> str | None:
    """The id of the order a redelivered create message stops at, planning it having
    ended its worker process again (``OrderService.note_redelivery``); ``None`` to plan.
    ``target``: the order's id, or its dedupe key (whose id it is).

    A message comes back not only when its worker died: the Redis transport gives back
    what a connection held when it drops, its task still running. So a redelivery first
    holds the order's planning (deployment-wide, :data:`PLANNING_HOLD_SECONDS`); finding
    it held by another delivery, planning now, it tries again later and counts nothing
    (two dropped connections during one long plan() recorded a good proposal failed)."""
    order_id = _redelivered_target(task, target)
    if order_id is None:
        return None
    wm = get_wm()
    name = f"planning:{order_id}"
    deadline = time.monotonic() + PLANNING_WAIT_SECONDS
    while not deployment.hold(wm.db, name, PLANNING_HOLD_SECONDS):
        if time.monotonic() > deadline:  # still planning there: its result will do
            log.warning("orders.create of %s: another delivery is planning it", order_id)
            raise task.retry(countdown=PLANNING_BUSY_RETRY_SECONDS)
        time.sleep(1.0)  # until it is given back (planned), or lapses (its process died)
    _RENEWING[order_id] = deployment.keep(wm.db, name, PLANNING_HOLD_SECONDS)
    try:
        lost = wm.orders.note_redelivery(order_id, type, payload, **proposal)
    except BaseException:
        _planned(task, order_id)
        raise
    if lost is None:
        return None
    _planned(task, order_id)
    log.error(
        "orders.create of %.200r: planning order %s ended its worker process again; recorded"
        " as failed [validation_failed]",
        type,
        order_id,
    )
    return str(lost["id"])


#: The renewals of the planning holds this process has, by order id.
_RENEWING: dict[uuid.UUID, threading.Event] = {}


def _planned(task: Task, target: Any) -> None:
    """A redelivered message's planning is over: its hold's renewal stopped, the hold
    given back."""
    order_id = _redelivered_target(task, target)
    if order_id is None:
        return
    stop = _RENEWING.pop(order_id, None)
    if stop is not None:
        stop.set()
    deployment.let_go(get_wm().db, f"planning:{order_id}")


@app.task(name="workmanager.orders.check_auto_approval", bind=True, **STATEFUL, **TRANSIENT)
def check_auto_approval(self: Task, order_id: str) -> bool:
    """Approve when the type auto-approves and the order is ready. Sent as the chain
    ``check_auto_approval | apply`` (SPEC §8.2): the result (approved or not) goes to the
    chained apply, which is a no-op when it is false. Sent alone (by name, from another
    service), an approval announces its apply as a manual one does."""
    chained = bool(self.request.chain)
    log.info("check_auto_approval of %s: task %s, chained %s", order_id, self.request.id, chained)
    oid = task_id_arg("orders.check_auto_approval", "order_id", order_id)
    if oid is None:
        return False
    return get_wm().orders.check_auto_approval(oid, chained=chained)


@app.task(name="workmanager.orders.apply", bind=True, **STATEFUL, **TRANSIENT)
def apply(self: Task, approved: bool | None = None, order_id: str | None = None) -> str:
    """Apply an approved order, exactly once in effect; retried with doubling backoff.
    While another run holds the order's apply claim nothing runs here: the task tries
    again when that claim would lapse (by then the order is applied, failed, or free).

    As the child of ``check_auto_approval`` in a chain, ``approved`` is its parent's
    result: false means not approved, and nothing runs. Sent alone (a manual approval,
    maintenance) it has only ``order_id``."""
    if order_id is None and isinstance(approved, str):  # args=[order_id]: in `approved`
        log.error(
            "orders.apply refused [validation_failed]: order_id must be given by name"
            " (kwargs={'order_id': ...}); the first positional argument is the chain's"
            " approval, got %r",
            approved,
        )
        return "refused"
    oid = task_id_arg("orders.apply", "order_id", order_id)
    if oid is None:
        return "refused"
    if approved is False:
        log.info(
            "apply of %s: not approved (parent %s), nothing to do", order_id, self.request.parent_id
        )
        return "not_approved"
    log.info("apply of %s: task %s, parent %s", order_id, self.request.id, self.request.parent_id)
    wm = get_wm()
    try:
        outcome = wm.executor.apply(oid)
    except ApplyFailed as exc:
        if exc.details["final"]:
            log.error("apply of %s failed for good: %s", order_id, exc.message)
            return "failed"
        raise self.retry(
            countdown=wm.executor.retry_delay(exc.details["failures"]), max_retries=None
        ) from exc
    except (IllegalStateTransition, NotFound) as exc:
        log.warning("apply of %s skipped: %s", order_id, exc.message)
        return "skipped"
    if outcome.retry_after is not None:
        raise self.retry(countdown=outcome.retry_after + CLAIM_SLACK_SECONDS, max_retries=None)
    return str(outcome.order["state"])
