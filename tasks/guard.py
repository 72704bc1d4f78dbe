"""Malformed task messages are refused, one logged line each, never a dead worker.

The task names are public (SPEC §8.1): other services send them, by hand-built messages
too. Celery builds a task's request from the message before anything of ours runs, and a
body that is not ``[args, kwargs, embed]`` (or a header it cannot read, such as a
``timelimit`` that is not two numbers) raised out of that step as an "Unrecoverable error":
the worker exited, the message went back to the queue, and the next worker died on it in
turn. A message whose ``embed`` was not a mapping was taken and then never ran, held
unacknowledged for the worker's life.

:class:`GuardedTask` (the app's task class) gives every task a strategy that checks the
body's shape first and turns what the request step raises on a malformed message into
Celery's own :class:`~celery.exceptions.InvalidTaskError`: the consumer logs it with the
message's task name and id and discards the message, as it does for any invalid message.
Arguments that do not fit the task's parameters (one missing, one too many, one given
twice) are refused the same way, where the task's call raised ``TypeError`` with a
traceback after the message was taken. Only what is raised before the request is
reserved (handed on to be run) is the message's: an error after that (under ``--pool
solo`` the task runs right there) is left to Celery, so no good message is discarded
for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from celery import Task
from celery.exceptions import InvalidTaskError
from celery.worker.state import task_reserved
from celery.worker.strategy import default

from workmanager.jsonvalues import deeper_than

#: What building a request raises on a message it cannot read.
_MALFORMED = (ValueError, TypeError, KeyError, AttributeError, IndexError)


def body_problem(payload: Any) -> str | None:
    """Why a protocol-2 body is not ``[args, kwargs, embed]`` (``None`` when it is)."""
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        return "the body is not [args, kwargs, embed]"
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple):
        return "args is not a list"
    if not isinstance(kwargs, Mapping):
        return "kwargs is not an object"
    if embed is not None and not isinstance(embed, Mapping):
        return "embed is not an object"
    return None


def hybrid_problem(payload: Mapping[str, Any]) -> str | None:
    """Why a hybrid body (protocol 2 headers, a protocol 1 object with ``args``) cannot be
    read (``None`` when it can): ``args`` a list, ``kwargs`` (when given) an object; else
    the task's call raised with a traceback and a create's proposal was lost."""
    if not isinstance(payload["args"], list | tuple):
        return "args is not a list"
    if payload.get("kwargs") is not None and not isinstance(payload["kwargs"], Mapping):
        return "kwargs is not an object"
    return None


def _arguments(payload: Any, hybrid: bool) -> tuple[Any, Any]:
    """A readable body's ``args`` and ``kwargs``."""
    if hybrid:
        return payload["args"], payload.get("kwargs") or {}
    return payload[0], payload[1]


def arguments_problem(signature: inspect.Signature | None, args: Any, kwargs: Any) -> str | None:
    """Why ``args`` and ``kwargs`` cannot be passed to a task of ``signature`` (``None``
    when they can): a missing, extra or repeated argument would raise ``TypeError`` in
    the task's call, after the message was taken, with a traceback and nothing recorded."""
    if signature is None:
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        return f"the arguments do not fit {signature}: {exc}"
    return None


def _signature(task: Task) -> inspect.Signature | None:
    """The parameters a message's arguments are bound to (``self`` of a bound task left
    out), or ``None`` when they cannot be read."""
    try:
        return inspect.signature(task.run)
    except (TypeError, ValueError):
        return None


def header_problem(headers: Any) -> str | None:
    """Why a header Celery reads only once the task is reserved cannot be read (``None``
    when it can): ``timelimit`` is ``[hard, soft]``, each seconds or null;
    ``stamped_headers`` a list of names and ``stamps`` an object (a revoked-stamp check
    iterates them: ``stamped_headers: 5`` ended the worker). (A bad ``eta`` Celery
    refuses by itself.)"""
    if not isinstance(headers, Mapping):
        return None
    limit = headers.get("timelimit")
    seconds = (type(None), int, float)
    if limit is not None and (
        not isinstance(limit, list | tuple)
        or len(limit) != 2
        or not all(isinstance(v, seconds) and not isinstance(v, bool) for v in limit)
    ):
        return "the timelimit header is not [hard, soft] seconds"
    stamped = headers.get("stamped_headers")
    if stamped and (
        not isinstance(stamped, list | tuple) or not all(isinstance(v, str) for v in stamped)
    ):
        return "the stamped_headers header is not a list of names"
    stamps = headers.get("stamps")
    if stamps and not isinstance(stamps, Mapping):
        return "the stamps header is not an object"
    return None


#: How deep a message's body may nest: past the deepest value any task accepts
#: (``MAX_JSON_DEPTH_CEILING`` under ``args``/``kwargs``), so such a value is still refused
#: by its task (and a create recorded), and well short of where handing the request to a
#: pool child (pickle, recursive) ended the worker with a RecursionError (~500 levels).
MAX_MESSAGE_DEPTH = 256


class _Reserving:
    """Whether the message being handled has been reserved (handed on to be run): an error
    raised before that is the message's, one after it is not."""

    def __init__(self) -> None:
        self.reserved = False

    def __call__(self, request: Any) -> None:
        self.reserved = True
        task_reserved(request)


def guarded(task: Task, app: Any, consumer: Any, **options: Any) -> Callable[..., Any]:
    """Celery's default strategy for ``task``, refusing malformed messages."""
    reserving = _Reserving()
    handle = default(task, app, consumer, task_reserved=reserving, **options)
    signature = _signature(task)

    def task_message_handler(
        message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
    ) -> Any:
        where = f"{task.name} message {_message_id(message)}"
        payload = message.payload
        hybrid = isinstance(payload, Mapping) and "args" in payload  # protocol 1 fields
        # the headers whatever the body (a hybrid's ended the worker too), and a hybrid's
        # own fields, which Celery reads as headers
        problem = header_problem(message.headers) or (header_problem(payload) if hybrid else None)
        if problem is None and body is None:
            problem = hybrid_problem(payload) if hybrid else body_problem(payload)
            if problem is None:
                args, kwargs = _arguments(payload, hybrid)
                problem = arguments_problem(signature, args, kwargs)
        headers = message.headers if isinstance(message.headers, Mapping) else {}
        raw = None if headers.get("compression") else message.body  # compressed: walked
        if problem is None and _too_deep(raw, payload):
            problem = f"the body nests deeper than {MAX_MESSAGE_DEPTH} levels"
        if problem is not None:
            raise InvalidTaskError(f"{where}: {problem}")
        reserving.reserved = False  # the consumer hands messages on one at a time
        try:
            return handle(message, body, ack, reject, callbacks, **kw)
        except _MALFORMED as exc:
            if reserving.reserved:
                raise  # the request was built and handed on: not the message's fault
            raise InvalidTaskError(f"{where} cannot be read: {exc!r}") from exc

    return task_message_handler


def _too_deep(raw: Any, payload: Any) -> bool:
    """Whether the decoded ``payload`` nests deeper than :data:`MAX_MESSAGE_DEPTH`. Its
    raw body opens no more containers than that in almost every message: counted in C
    first, so only a body with more ``[`` and ``{`` (strings holding some count too) is
    walked."""
    if isinstance(raw, bytes | str):
        opens = raw.count(b"[" if isinstance(raw, bytes) else "[")
        opens += raw.count(b"{" if isinstance(raw, bytes) else "{")
        if opens <= MAX_MESSAGE_DEPTH:
            return False
    return deeper_than(payload, MAX_MESSAGE_DEPTH)


def _message_id(message: Any) -> str:
    headers = getattr(message, "headers", None)
    found = headers.get("id") if isinstance(headers, Mapping) else None
    return str(found) if found is not None else "(no id)"


class GuardedTask(Task):  # type: ignore[misc]
    """The app's task class: Celery's, with the guarded strategy."""

    Strategy = "tasks.guard:guarded"
