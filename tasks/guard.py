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
Only what is raised before the request is reserved (handed on to be run) is the
message's: an error after that (under ``--pool solo`` the task runs right there) is left
to Celery, so no good message is discarded for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from celery import Task
from celery.exceptions import InvalidTaskError
from celery.worker.state import task_reserved
from celery.worker.strategy import default

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


def header_problem(headers: Any) -> str | None:
    """Why a header Celery reads only once the task is reserved cannot be read (``None``
    when it can): ``timelimit`` is ``[hard, soft]``, each seconds or null. (A bad ``eta``
    Celery refuses by itself.)"""
    if not isinstance(headers, Mapping):
        return None
    limit = headers.get("timelimit")
    if limit is None:
        return None
    seconds = (type(None), int, float)
    if (
        not isinstance(limit, list | tuple)
        or len(limit) != 2
        or not all(isinstance(v, seconds) and not isinstance(v, bool) for v in limit)
    ):
        return "the timelimit header is not [hard, soft] seconds"
    return None


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

    def task_message_handler(
        message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
    ) -> Any:
        where = f"{task.name} message {_message_id(message)}"
        payload = message.payload
        hybrid = isinstance(payload, Mapping) and "args" in payload  # protocol 1 fields
        if body is None and not hybrid:  # protocol 2
            problem = body_problem(payload) or header_problem(message.headers)
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


def _message_id(message: Any) -> str:
    headers = getattr(message, "headers", None)
    found = headers.get("id") if isinstance(headers, Mapping) else None
    return str(found) if found is not None else "(no id)"


class GuardedTask(Task):  # type: ignore[misc]
    """The app's task class: Celery's, with the guarded strategy."""

    Strategy = "tasks.guard:guarded"
