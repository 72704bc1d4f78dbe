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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from celery import Task
from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default

#: What building a request raises on a message it cannot read (not a broker or pool
#: error: those keep their own handling).
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


def guarded(task: Task, app: Any, consumer: Any, **options: Any) -> Callable[..., Any]:
    """Celery's default strategy for ``task``, refusing malformed messages."""
    handle = default(task, app, consumer, **options)

    def task_message_handler(
        message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
    ) -> Any:
        where = f"{task.name} message {_message_id(message)}"
        payload = message.payload
        hybrid = isinstance(payload, Mapping) and "args" in payload  # protocol 1 fields
        if body is None and not hybrid:  # protocol 2
            problem = body_problem(payload)
            if problem is not None:
                raise InvalidTaskError(f"{where}: {problem}")
        try:
            return handle(message, body, ack, reject, callbacks, **kw)
        except _MALFORMED as exc:
            raise InvalidTaskError(f"{where} cannot be read: {exc!r}") from exc

    return task_message_handler


def _message_id(message: Any) -> str:
    headers = getattr(message, "headers", None)
    found = headers.get("id") if isinstance(headers, Mapping) else None
    return str(found) if found is not None else "(no id)"


class GuardedTask(Task):  # type: ignore[misc]
    """The app's task class: Celery's, with the guarded strategy."""

    Strategy = "tasks.guard:guarded"
