"""Keeping the apply claims of running bodies alive (:mod:`workmanager.services.apply`
owns the claim's rule; this is the thread that renews it while a body runs)."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from .context import ServiceContext

log = logging.getLogger("workmanager.apply")


def elapsed_clock() -> float:
    """Seconds on a clock never stepped that counts a suspend (Linux's boot time)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


#: How long the renewing thread outlives the last body it renewed (a busy worker keeps it;
#: an idle one, or a test's many WorkManagers, do not keep a thread each).
_IDLE_EXIT = 5.0


class ClaimRenewer:
    """Keeps the claims of the apply bodies running in this process alive: one daemon
    thread (started with a body when none runs: after a fork, or idle for a while) renews
    each claim every third of its lifetime, so it lapses only when the process stops
    renewing it (it died, or stalled for a lifetime). A renewal that finds the claim gone
    (the order recorded, or the claim taken after it lapsed) stops renewing it; one that
    fails (the database unreachable) is tried again at the next round.

    A renewal's expiry is the wall clock when the body started (checked in step with the
    database just before, by the claim) plus the time since on a clock no one steps and
    that counts a suspend (:func:`elapsed_clock`): a host clock
    stepped back while a long body ran wrote an expiry already past, and another worker
    started the same apply beside it."""

    def __init__(
        self,
        ctx: ServiceContext,
        renew: Callable[[uuid.UUID, str, datetime], bool],
        lifetime: timedelta,
    ):
        self.ctx, self.renew, self.lifetime = ctx, renew, lifetime
        self.every = lifetime.total_seconds() / 3
        self._due: dict[tuple[uuid.UUID, str], float] = {}
        #: per body: (the wall clock, :func:`elapsed_clock`) when it started
        self._started: dict[tuple[uuid.UUID, str], tuple[datetime, float]] = {}
        self._lock = threading.Condition()
        self._owner = 0  # the pid whose thread runs (0: none yet)
        self._wake_at = 0.0  # when the thread wakes next (0: it is not waiting)

    @contextmanager
    def holding(self, order_id: uuid.UUID, claim: str) -> Iterator[None]:
        key = (order_id, claim)
        with self._lock:
            self._started[key] = (self.ctx.clock(), elapsed_clock())
            due = self._due[key] = time.monotonic() + self.every
            if self._owner != os.getpid():  # none yet, or the parent's before a fork
                self._owner = os.getpid()
                threading.Thread(target=self._run, name="apply-claims", daemon=True).start()
            elif due < self._wake_at:  # else it wakes in time by itself: no switch to it
                self._lock.notify()
        try:
            yield
        finally:
            with self._lock:
                self._due.pop(key, None)
                self._started.pop(key, None)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # never expected; a body after it starts a thread again
            with self._lock:
                self._owner = 0
            raise

    def _loop(self) -> None:
        idle_since: float | None = None
        while True:
            with self._lock:
                now = time.monotonic()
                if self._due:
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= _IDLE_EXIT:
                    self._owner = 0  # the next body starts a thread again
                    return
                due = [key for key, at in self._due.items() if at <= now]
                wait = max(min(self._due.values(), default=now + _IDLE_EXIT) - now, 0.01)
                if not due:
                    self._wake_at = now + wait
                    self._lock.wait(wait)
                    self._wake_at = 0.0
                    continue
            for key in due:
                self._renew(key)

    def _renew(self, key: tuple[uuid.UUID, str]) -> None:
        order_id, claim = key
        with self._lock:
            started = self._started.get(key)
        if started is None:
            return  # the body finished meanwhile
        wall, mono = started
        now = wall + timedelta(seconds=elapsed_clock() - mono)  # not stepped, counts a suspend
        try:
            kept = self.renew(order_id, claim, now + self.lifetime)
        except Exception:  # the database away: the next round tries again
            log.warning("renewing the apply claim of %s failed", order_id, exc_info=True)
            kept = True
        with self._lock:
            if key not in self._due:
                return  # the body finished meanwhile
            if kept:
                self._due[key] = time.monotonic() + self.every
            else:
                log.warning("the apply claim of %s was lost while its body ran", order_id)
                del self._due[key]
