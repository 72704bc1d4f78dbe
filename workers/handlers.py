"""How a consumer agent runs user code: a function, or a class with hooks for parts."""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from workmanager import Lease, WorkManager, tracing
from workmanager.errors import (
    ConfigurationError,
    IllegalStateTransition,
    LeaseConflict,
    LeaseExpired,
    PermanentError,
    TransientError,
    ValidationFailed,
    WorkManagerError,
)
from workmanager.importing import import_object
from workmanager.patience import Patience
from workmanager.services.inputs import FINALIZE_MODES
from workmanager.types import AgentInfo

log = logging.getLogger("workmanager.agent")


HANDLER_HINT = (
    "expected pkg.mod:function(item, lease), or pkg.mod:Class (made with no arguments) "
    "with a handle(item, lease) or parts(item, lease) method (docs/agents.md)"
)


def load_handler(reference: str) -> Any:
    """``pkg.mod:callable`` or ``pkg.mod:Class`` (instantiated with no arguments), checked
    at start-up as :func:`run_handler` will call it: a ``parts`` or ``handle`` method, or
    else the handler itself, must be callable. Anything else is a ConfigurationError
    naming --handler (started, it would fail every item it took, spending attempts)."""
    target = import_object(reference, "--handler")
    handler = _instantiate(reference, target) if isinstance(target, type) else target
    hook = next((name for name in ("parts", "handle") if hasattr(handler, name)), None)
    called = getattr(handler, hook) if hook else handler
    if not callable(called):
        what = f"its {hook} is not a method" if hook else "it is not callable"
        raise ConfigurationError(
            f"--handler: {reference!r} ({type(handler).__name__}) cannot handle an item: {what}",
            hint=HANDLER_HINT,
        )
    # a handler object whose __call__ is async is as async as an ``async def``
    body = called if inspect.isroutine(called) else getattr(called, "__call__", called)  # noqa: B004
    if hook != "parts" and inspect.isgeneratorfunction(body):  # it returns a generator
        raise ConfigurationError(
            f"--handler: {reference!r} is a generator; only a parts(item, lease) method"
            " yields (each part), a handler returns the item's result",
            hint="return the result, or make it the parts() method of a class (docs/agents.md)",
        )
    if inspect.iscoroutinefunction(body) or inspect.isasyncgenfunction(body):
        raise ConfigurationError(
            f"--handler: {reference!r} is async; consumer agents call handlers as plain"
            " functions (each item runs in a worker thread)",
            hint="make it a plain def (call asyncio.run(...) inside it for async code)",
        )
    mode = getattr(handler, "finalize_mode", "strict") if hook == "parts" else "strict"
    if mode not in FINALIZE_MODES:  # every finalize refused, every order failed for good
        raise ConfigurationError(
            f"--handler: {reference!r} has finalize_mode {mode!r}; it is 'strict' or 'best_effort'",
            hint="finalize_mode = 'best_effort' keeps what the parts gave when some are missing",
        )
    return handler


def _instantiate(reference: str, cls: type) -> Any:
    try:
        return cls()
    except Exception as exc:  # a constructor that needs arguments, or fails
        raise ConfigurationError(
            f"--handler: {reference}() raised {type(exc).__name__}: {exc}", hint=HANDLER_HINT
        ) from exc


class Heartbeats:
    """One background thread that heartbeats every lease this consumer holds.

    A thread per message would cost a start and a join (~0.1 ms, and GIL churn) on every
    item; this one sleeps until the earliest lease is due. Each lease is beaten every
    ``every`` seconds from when it was taken; a lease lost (conflict, expiry) is dropped,
    and the submit that follows is refused and reported as lost.
    """

    def __init__(self, wm: WorkManager, agent: AgentInfo, every: float) -> None:
        self.wm, self.agent, self.every = wm, agent, every
        self._due: dict[int, tuple[float, Lease]] = {}
        #: each lease's trace context (the agent task's span), continued by its beats
        self._carried: dict[int, object | None] = {}
        self._next = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, lease: Lease) -> Iterator[Callable[[], Lease]]:
        """Heartbeat ``lease`` until the block ends; yields a function that returns the
        latest renewal (its item as the last beat left it)."""
        key = next(self._next)
        with self._wake:
            self._due[key] = (time.monotonic() + self.every, lease)
            self._carried[key] = tracing.current_context(self.wm.settings)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="wm-heartbeats")
                self._thread.start()
            self._wake.notify()

        def current() -> Lease:
            with self._wake:
                entry = self._due.get(key)
            return entry[1] if entry else lease

        try:
            yield current
        finally:
            with self._wake:
                self._due.pop(key, None)
                self._carried.pop(key, None)

    def held(self) -> list[Lease]:
        """The leases being worked on now, each as its latest renewal left it."""
        with self._wake:
            return [lease for _, lease in self._due.values()]

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                due = [(k, lease) for k, (at, lease) in self._due.items() if at <= now]
                if not due:
                    soonest = min((at for at, _ in self._due.values()), default=now + 60)
                    self._wake.wait(timeout=max(soonest - now, 0.01))
                    continue
            for key, lease in due:
                self._beat(key, lease)

    def _beat(self, key: int, lease: Lease) -> None:
        try:
            with tracing.within(self._carried.get(key)):
                renewed = self.wm.agent.heartbeat(lease, agent=self.agent)
        except (LeaseConflict, LeaseExpired):
            with self._wake:
                self._due.pop(key, None)  # lost: stop beating it
            return
        except IllegalStateTransition as ended:
            # the token still matches, so this lease's own submit ended it while the beat
            # was on its way (the item is submitted or later): done, nothing to say
            log.debug("heartbeat of %s after its submit: %s", lease.item_id, ended.message)
            with self._wake:
                self._due.pop(key, None)
            return
        except WorkManagerError as exc:  # an outage: one line, and the next beat tries again
            log.warning("heartbeat of %s failed [%s]: %s", lease.item_id, exc.code, exc.message)
            renewed = lease
        except Exception:  # a bug: keep the thread (and the other leases) alive
            log.warning("heartbeat of %s failed; trying again", lease.item_id, exc_info=True)
            renewed = lease
        with self._wake:
            if key in self._due:  # not finished meanwhile
                self._due[key] = (time.monotonic() + self.every, renewed)


class Refused(Exception):
    """The service refused what the handler produced: a permanent 4xx error from submit,
    submit_part or finalize (``validation_failed``, ``malformed_json``, ``missing_parts``,
    …), or a ``parts()`` that yielded something other than a pair. The handler returned;
    its result is at fault, not a crash of its code, and the same result would be refused
    again. ``error`` is the service's error (``part_key``: the part it refused)."""

    def __init__(self, error: WorkManagerError, part_key: Any = None) -> None:
        self.error, self.part_key = error, part_key
        super().__init__(self.summary())

    def summary(self) -> str:
        """One line: each ``path: message`` of the error's details, else its message (at
        most ``SUMMARY_CHARS`` characters)."""
        details = self.error.details
        if isinstance(details, list) and details and all(_located(d) for d in details):
            text = "; ".join(f"{_path(d['path'])}: {d.get('message')}" for d in details)
        else:
            text = self.error.message
        text = text if self.part_key is None else f"part {self.part_key!r}: {text}"
        return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"

    def report(self) -> dict[str, str]:
        """The error ``fail`` records, ``{code, message}``: the message is the summary, so
        the stored error names the paths the service refused."""
        return {"code": self.error.code, "message": self.summary()}


class HookFailed(Refused):
    """The order type's own check (a validation hook, ``required_parts``, ``assemble``)
    crashed on what the handler produced (``hook_error``): not the handler's fault, and
    retried like a crash (the hook may have met an outage). Said as one line naming the
    hook's error, which ``fail`` records, instead of "handler failed" and a traceback."""


class HandlerRaised(Exception):
    """The handler's own code raised a :class:`TransientError` (a call of its own met an
    outage): a handler failure, retried, not a delivery of its output that timed out."""

    def __init__(self, error: TransientError) -> None:
        self.error = error
        super().__init__(str(error))


@contextmanager
def handler_code() -> Iterator[None]:
    try:
        yield
    except TransientError as exc:
        raise HandlerRaised(exc) from exc


def _produced(produced: Any) -> Iterator[Any]:
    """Each entry ``parts()`` yields; what its code raises meanwhile is the handler's."""
    entries = iter(produced)
    while True:
        with handler_code():
            entry = next(entries, _END)
        if entry is _END:
            return
        yield entry


_END = object()


#: The longest refusal summary: the log line's text and the message ``fail`` records.
SUMMARY_CHARS = 1000


def _located(detail: Any) -> bool:
    return isinstance(detail, dict) and "path" in detail


def _path(path: Any) -> str:
    """``$.result.when`` → ``result.when``: the paths of what the agent sent."""
    text = str(path)
    return text[2:] if text.startswith("$.") else text


#: The refusals of what a handler produced, which the same result would meet again.
REFUSED_OUTPUT = ("validation_failed", "malformed_json", "payload_too_large", "missing_parts")


def refused_output(exc: Exception) -> bool:
    """Whether ``exc`` refuses the handler's output itself: not a lost lease, a state
    change meanwhile (an order rejected: 409), or an order type's hook that crashed while
    checking it (``hook_error``: its own bug or an outage it met, retried as a crash)."""
    if not isinstance(exc, PermanentError) or exc.code not in REFUSED_OUTPUT:
        return False
    details = exc.details if isinstance(exc.details, list) else []
    return not any(isinstance(d, dict) and d.get("validator") == "hook_error" for d in details)


@contextmanager
def refusals(part_key: Any = None) -> Iterator[None]:
    """Around a call that hands the handler's output to the service: a refusal of that
    output (:func:`refused_output`) becomes :class:`Refused`; anything else (a lost lease,
    a transient or internal error) passes unchanged; a type's hook that crashed on the
    output becomes :class:`HookFailed`."""
    try:
        yield
    except PermanentError as exc:
        if refused_output(exc):
            raise Refused(exc, part_key) from exc
        if exc.code in REFUSED_OUTPUT:  # the type's hook crashed on the output
            raise HookFailed(exc, part_key) from exc
        raise


def _pair(index: int, produced: Any) -> tuple[Any, Any]:
    if isinstance(produced, tuple | list) and len(produced) == 2:
        return produced[0], produced[1]
    raise Refused(
        ValidationFailed.at(
            f"parts[{index}]",
            f"parts() must yield (part_key, payload) pairs, got {type(produced).__name__}",
            "type",
            "parts() must yield (part_key, payload) pairs",
        )
    )


def run_handler(
    wm: WorkManager,
    handler: Any,
    lease: Lease,
    agent: AgentInfo,
    current: Callable[[], Lease] | None = None,
) -> str:
    """Run the handler on a leased item and submit (or finalize) what it produced: a
    ``parts(item, lease)`` method yields ``(part_key, payload)`` pairs, each submitted as
    it comes, then finalized in the handler's ``finalize_mode`` (docs/agents.md).
    ``current`` gives the latest heartbeat renewal, which the submit presents. What the
    service refuses for good raises :class:`Refused`; what the handler raises passes as
    it is."""
    assert lease.item is not None
    if hasattr(handler, "parts"):
        with handler_code():
            produced = handler.parts(lease.item, lease)
        if isinstance(produced, str | bytes | dict) or not hasattr(produced, "__iter__"):
            raise Refused(
                ValidationFailed.at(
                    "parts",
                    "parts() must return an iterable of (part_key, payload) pairs (a"
                    f" generator, a list), got {type(produced).__name__}",
                    "type",
                    "parts() must yield (part_key, payload) pairs",
                )
            )
        try:
            for index, entry in enumerate(_produced(produced)):
                part_key, payload = _pair(index, entry)
                with refusals(part_key):
                    delivered(
                        lambda k=part_key, p=payload: wm.agent.submit_part(
                            lease, k, p, agent=agent
                        ),
                        f"part {part_key!r} of {lease.item_id}",
                    )
        finally:
            close = getattr(produced, "close", None)
            if callable(close):
                close()  # a generator left early (a refusal) runs its cleanup now
        mode = getattr(handler, "finalize_mode", "strict")
        with refusals():
            delivered(
                lambda: wm.agent.finalize(lease, mode, agent=agent),
                f"the finalize of {lease.item_id}",
            )
        return "finalized"
    call = handler.handle if hasattr(handler, "handle") else handler
    with handler_code():
        result = call(lease.item, lease)
    with refusals():
        delivered(
            lambda: wm.agent.submit(current() if current else lease, result, agent=agent),
            f"the result of {lease.item_id}",
        )
    return "submitted"


#: How a consumer hands over what its handler produced while the database or lock store
#: is out of reach: tried again for up to 30 s, while the heartbeats keep the lease.
DELIVERY = Patience("deliver")


def delivered(send: Callable[[], Any], what: str) -> Any:
    """``send()`` with :data:`DELIVERY`'s patience."""
    return DELIVERY.call(send, what, log)
