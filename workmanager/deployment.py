"""The settings every process of a deployment must share, recorded in its database.

The API servers, the control worker, beat, the agents and an operator's shell each read
their own ``WORK_MANAGER_*`` variables. Some must agree, or work is lost or doubled
without an error: a process on the database lease backend beside agents on Redis sweeps
their live leases back to the queue (a Redis heartbeat renews only the lock), another
Redis key prefix or TTL does the same, and another queue name announces items to a queue
nobody reads. Nothing could see the difference: each process was right by its own
settings.

So the deployment's values of :data:`SHARED` are recorded in its database (table
``work_deployment``): the first process to start (or ``workmanager db upgrade``) writes
its own when there is no record, and ``workmanager db upgrade --record-settings``
replaces it (how they are changed: a ``db upgrade`` run from a shell or host missing a
variable must not change the deployment). Every server, worker, beat and agent compares its
settings at start-up (:func:`check`) and refuses to start, naming the variable; the
sweep and ``leases reclaim --expired`` compare before they judge any lease expired, so a
process started before the record changed stops reclaiming instead of reclaiming live
work. The Redis server itself (``WORK_MANAGER_REDIS_URL``) is not compared: hosts may
name one server differently (docs/configuration.md).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from .db.models import DeploymentRecord, utcnow
from .db.session import Database
from .errors import ConfigurationError, Unavailable
from .settings import Settings
from .settings_values import PREFIX

log = logging.getLogger("workmanager.deployment")

KEY = "settings"


def _always(settings: Settings) -> bool:
    return True


def _on_redis(settings: Settings) -> bool:
    return settings.lease_backend == "redis"


def _redelivers(settings: Settings) -> bool:
    """A broker that delivers a message again after the visibility timeout, measured by
    whichever process polls (Redis, the embedded one): one process's shorter timeout took
    back what another still ran."""
    return settings.broker_url.startswith(("redis://", "rediss://", "sqla+"))


#: The settings that must agree, and when they matter.
SHARED: tuple[tuple[str, Callable[[Settings], bool]], ...] = (
    ("lease_backend", _always),
    ("lease_ttl_seconds", _always),
    ("redis_prefix", _on_redis),
    ("redis_cluster", _on_redis),
    ("control_queue", _always),
    ("apply_queue", _always),
    ("agent_queue_prefix", _always),
    ("broker_visibility_timeout_seconds", _redelivers),
    ("announced_types", _always),
)


def shared(settings: Settings) -> dict[str, Any]:
    """This process's values of :data:`SHARED` (those that matter with its backend)."""
    values = {name: getattr(settings, name) for name, matters in SHARED if matters(settings)}
    # a list as its variable reads: "a,b"
    return {k: ",".join(sorted(v)) if isinstance(v, tuple) else v for k, v in values.items()}


def one_process_only(settings: Settings) -> None:
    """Refuse the ``memory`` lease backend in a process of a deployment (``serve``,
    ``mcp``, a worker, an agent): its locks live in one process's memory, so each process
    had its own, and a worker's sweep took back every lease the API granted (a
    configuration pass: a live lease requeued, its agent's next heartbeat refused). It is
    for tests and scripts that do everything in one process."""
    if settings.lease_backend == "memory":
        raise ConfigurationError(
            f"{variable('lease_backend')}=memory keeps the leases in one process's memory:"
            " this process's would not be the others'",
            hint="use database (the default) or redis; memory is for tests in one process",
        )
    broker_reaches_others(settings)


def broker_reaches_others(settings: Settings) -> None:
    """Refuse kombu's ``memory://`` broker where a message must reach another process
    (a deployment's processes, ``orders create``): it was sent into this process's memory,
    said "enqueued", and lost."""
    if settings.broker_url.strip().lower().startswith("memory:"):
        raise ConfigurationError(
            f"{variable('broker_url')}=memory:// keeps the messages in one process's memory:"
            " no other process would receive them",
            hint="unset it (the embedded default), or use redis:// or amqp://; memory:// is"
            " for tests in one process",
        )


def variable(name: str) -> str:
    return f"{PREFIX}{name.upper()}"


@dataclass(frozen=True)
class Difference:
    """One shared setting this process has otherwise than the deployment's record."""

    name: str
    here: Any
    recorded: Any

    def __str__(self) -> str:
        return f"{variable(self.name)} is {self.here!r} here, {self.recorded!r} for this deployment"


def differences(mine: dict[str, Any], recorded: dict[str, Any]) -> list[Difference]:
    """The shared settings both sides have, with other values (a Redis prefix is not
    compared with a deployment on the database backend: the backend differs first)."""
    names = [name for name, _ in SHARED if name in mine and name in recorded]
    return [
        Difference(name, mine.get(name), recorded.get(name))
        for name in names
        if mine.get(name) != recorded.get(name)
    ]


def who() -> str:
    """Which process recorded: its command, host and pid."""
    argv = sys.argv or ["python"]
    command = os.path.basename(argv[0])
    if command == "__main__.py":  # python -m celery: the package
        command = os.path.basename(os.path.dirname(argv[0]))
    words = [command, *(a for a in argv[1:3] if not a.startswith("-"))]
    return f"{' '.join(words)} on {socket.gethostname()} (pid {os.getpid()})"[:255]


def read(db: Database) -> DeploymentRecord | None:
    with db.reads() as session:  # a probe's read: never behind a writer (SQLite)
        row = session.get(DeploymentRecord, KEY)
        if row is not None:
            session.expunge(row)
        return row


def _insert(db: Database, mine: dict[str, Any]) -> bool:
    """Write the first record; False when there is one already (another process may
    have written it a moment ago: its insert and this one race, and one loses)."""
    from sqlalchemy.exc import IntegrityError

    try:
        with db.transaction() as session:
            session.add(DeploymentRecord(key=KEY, value=mine, recorded_by=who()))
    except IntegrityError:
        return False
    return True


def record(db: Database, settings: Settings) -> list[Difference]:
    """Record this process's shared settings as the deployment's (``db upgrade
    --record-settings``); the differences from the record they replace."""
    mine = shared(settings)
    if read(db) is None and _insert(db, mine):
        return []
    with db.transaction() as session:
        row = session.get(DeploymentRecord, KEY, with_for_update=True)
        assert row is not None  # the record is never deleted but with the schema
        changed = differences(mine, row.value)
        if changed:
            row.value, row.recorded_at, row.recorded_by = mine, utcnow(), who()
        return changed


def check(db: Database, settings: Settings, first: bool = True, clock: bool = True) -> bool:
    """Raise :class:`ConfigurationError` naming the first shared setting this process
    has otherwise than the deployment's record, or (``clock``) when its clock is not the
    database server's (:func:`check_clock`). ``first``: with no record yet, this
    process's settings become it (start-up; then True); else nothing is compared (the
    sweep)."""
    if clock:
        check_clock(db, settings)
    row = read(db)
    if row is None:
        if first and _insert(db, shared(settings)):
            return True
        row = read(db)  # another process's record, written a moment ago, or none
        if row is None:
            return False
    changed = differences(shared(settings), row.value)
    if changed:
        when = row.recorded_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        raise ConfigurationError(
            f"{changed[0]} (recorded by {row.recorded_by} at {when})",
            hint="every process of a deployment must use the same value; to change it,"
            " stop every process, run `workmanager db upgrade --record-settings` with the"
            " new settings, then start them again",
        )
    return False


#: This process's clock, as the lease and claim times it writes read it.
wall = time.time


def clock_skew(db: Database) -> tuple[float, float] | None:
    """How far the database server's clock is ahead of this process's, in seconds
    (negative: behind), and the measure's margin (half its round trip); ``None`` on SQLite,
    whose clock is the process's own."""
    if not db.is_postgres:
        return None
    with db.transaction() as session:
        session.execute(text("SELECT 1"))  # the connection and its BEGIN, untimed
        before = wall()
        at = session.scalar(text("SELECT clock_timestamp()"))
        after = wall()
    return at.timestamp() - (before + after) / 2, (after - before) / 2


def check_clock(db: Database, settings: Settings) -> None:
    """A lease's expiry, an apply claim and an idempotency key's lock are written with one
    process's clock and judged with another's: a host whose clock is off by more than a
    lease's time left has live leases swept, or an apply run twice. Refused, naming the
    skew, when it passes ``WORK_MANAGER_MAX_CLOCK_SKEW_SECONDS`` (0: not compared)."""
    limit = settings.max_clock_skew_seconds
    measured = clock_skew(db) if limit else None
    if measured is None or abs(measured[0]) - measured[1] <= limit:
        return
    skew = measured[0]
    raise ConfigurationError(
        f"this host's clock is {abs(skew):.1f} s {'behind' if skew > 0 else 'ahead of'} the"
        f" database server's (WORK_MANAGER_MAX_CLOCK_SKEW_SECONDS is {limit:g}): leases,"
        " apply claims and idempotency keys are judged by each process's clock",
        hint="synchronise the clocks of every host (NTP, chrony); keep the limit well under"
        " the lease TTL less the heartbeat interval",
    )


#: How often a long-running process compares its settings and clock again (:class:`InStep`):
#: a clock that drifts after the start (a VM resumed, NTP stepping) is caught within it
#: (four short statements, paid by the call that comes due; a minute let a host stepped
#: back write expiries already past for that long).
RECHECK_SECONDS = 10.0


class InStep:
    """:func:`check` (nothing recorded) before a process first acts, then at most every
    :data:`RECHECK_SECONDS`: what checkouts, heartbeats, applies and maintenance call
    before they judge a lease or a claim. A process that differs is
    :class:`~workmanager.errors.Unavailable` (503), the variable or the skew named."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.settings = db, settings
        self._seen: float | None = None

    def __call__(self) -> None:
        now = time.monotonic()
        if self._seen is not None and now - self._seen <= RECHECK_SECONDS:
            return
        try:
            check(self.db, self.settings, first=False)
        except ConfigurationError as exc:
            raise Unavailable(
                f"this process's settings are not the deployment's: {exc.message}",
                hint=exc.hint,
            ) from exc
        self._seen = now


def described(settings: Settings) -> str:
    """``WORK_MANAGER_LEASE_BACKEND=redis, …``: the shared settings as an operator sets them."""
    said = {k: str(v).lower() if isinstance(v, bool) else v for k, v in shared(settings).items()}
    return ", ".join(f"{variable(k)}={v}" for k, v in said.items())  # true, as it is set


def hold(db: Database, name: str, seconds: float) -> bool:
    """Take the deployment-wide hold ``name`` for ``seconds`` (a row of ``work_deployment``
    beside the settings' record): False while another process holds it and its time has
    not run out. What one process may run at a time in the whole deployment (generate:
    ``tasks/beat``); a lock of the process held only its own pool child, and a
    ``discover()`` that hung took one more child every beat."""
    from sqlalchemy.exc import IntegrityError

    now = utcnow()
    mine = {"until": (now + timedelta(seconds=seconds)).isoformat(), "by": who()}
    try:
        with db.transaction() as session:
            row = session.get(DeploymentRecord, name, with_for_update=True)
            if row is None:
                session.add(DeploymentRecord(key=name, value=mine, recorded_by=mine["by"]))
                return True
            if str(row.value.get("until", "")) > now.isoformat():
                return False
            row.value, row.recorded_at, row.recorded_by = mine, now, mine["by"]
            return True
    except IntegrityError:  # another process inserted it a moment ago
        return False


def keep(db: Database, name: str, seconds: float) -> threading.Event:
    """Renew this process's hold ``name`` every third of ``seconds`` until the event
    returned is set: the hold lasts while its work runs, and lapses within ``seconds`` of
    its process dying (a hold of an hour kept every generate away for that hour after its
    run was killed). A renewal that fails (the database away) is tried at the next round."""
    stop = threading.Event()

    def renewing() -> None:
        while not stop.wait(seconds / 3):
            try:
                renew(db, name, seconds)
            except Exception:
                log.warning("renewing the hold %s failed", name, exc_info=True)

    threading.Thread(target=renewing, daemon=True, name=f"wm-{name}").start()
    return stop


def renew(db: Database, name: str, seconds: float) -> bool:
    """Push this process's hold ``name`` out to ``seconds`` from now; False when it is not
    this process's (lapsed and taken by another, or given back)."""
    until = (utcnow() + timedelta(seconds=seconds)).isoformat()
    with db.transaction() as session:
        row = session.get(DeploymentRecord, name, with_for_update=True)
        if row is None or row.recorded_by != who():
            return False
        row.value = {**row.value, "until": until}
        return True


def let_go(db: Database, name: str) -> None:
    """Give back the hold ``name`` when this process holds it."""
    from sqlalchemy import delete

    with db.transaction() as session:
        session.execute(
            delete(DeploymentRecord).where(
                DeploymentRecord.key == name, DeploymentRecord.recorded_by == who()
            )
        )
