"""What a worker and beat say when Celery would say it in many lines, or many times.

Each filter rewrites one kind of Celery log record (what Celery does is unchanged):

- a message the consumer discards (invalid, for a task this worker does not have, not
  decodable): one ``ERROR`` line naming the message and the reason, where Celery wrote a
  dozen with the body and a traceback;
- a scheduled task beat could not send (the broker down): one ``ERROR`` line, where
  Celery wrote ~160 with a stack, every task, every period;
- a task retried because the database, Redis or the broker is away
  (:class:`~workmanager.errors.TransientError`): every waiting task logged its retry,
  each time, during the whole outage; now one line per kind of error at most every 30 s,
  with how many were not said in between.

Installed on import (``tasks/app.py`` imports this module).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.app import trace
from celery.signals import task_retry
from celery.worker.consumer import consumer as celery_consumer

from workmanager.errors import TransientError
from workmanager.saying import Throttled, first_line, logged, one_line


class OneLineRefusals(logging.Filter):
    """Celery's consumer reports a message it discards in a dozen lines with the body and
    a traceback: said here in one ``ERROR`` line naming the message and the reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        said = _one_line(record.msg, record.args)
        if said is not None:
            record.msg, record.args, record.exc_info, record.exc_text = said, None, None, None
            record.levelno, record.levelname = logging.ERROR, "ERROR"
        return True


def _one_line(template: Any, args: Any) -> str | None:
    if not isinstance(args, tuple) or not args:
        return None
    reason = logged(first_line(args[0]))
    if template is celery_consumer.INVALID_TASK_ERROR:
        return f"refused [invalid_message]: {reason}; the message was discarded"
    if template is celery_consumer.UNKNOWN_TASK_ERROR:
        return (
            f"refused [invalid_message]: no task named {reason} on this worker; the message"
            " was discarded (check the task's name and the queue it was sent to)"
        )
    if template is celery_consumer.MESSAGE_DECODE_ERROR:
        kind = args[1] if len(args) > 1 else None
        return (
            f"refused [invalid_message]: a message of content type {kind!r} could not be"
            f" decoded ({reason}); the message was discarded"
        )
    return None


class OneLineBeatErrors(logging.Filter):
    """Beat's "Message Error" (a scheduled task it could not send) in one ``ERROR`` line;
    the next period sends it again, as before."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Message Error: %s"):
            exc = record.args[0] if isinstance(record.args, tuple) and record.args else None
            record.msg = "beat: a scheduled task could not be sent (%s: %s); sent again next time"
            record.args = (type(exc).__name__, logged(first_line(exc)))
            record.exc_info, record.exc_text = None, None
        return True


#: The retry this thread is logging (Celery sends ``task_retry`` just before its line).
_retrying = threading.local()


def _remember_retry(request: Any = None, reason: Any = None, **_: Any) -> None:
    _retrying.id = getattr(request, "id", None)
    _retrying.exc = getattr(reason, "exc", None)


class QuietOutageRetries(logging.Filter):
    """A retry for a :class:`TransientError` (an outage): said once per kind of error in
    ``every`` seconds, in one line, with how many like it were not said; other retries
    as Celery says them."""

    def __init__(self, every: float = 30.0) -> None:
        super().__init__()
        self.throttle = Throttled(logging.getLogger(trace.__name__), every)

    def filter(self, record: logging.LogRecord) -> bool:
        data = record.args
        if record.msg is not trace.LOG_RETRY or not isinstance(data, dict):
            return True
        exc = getattr(_retrying, "exc", None)
        if getattr(_retrying, "id", None) != data.get("id") or not isinstance(exc, TransientError):
            return True
        more = self.throttle.due(type(exc).__name__)
        if more is None:
            return False
        record.msg = "Task %s[%s] retry: %s" + more
        record.args = (data.get("name"), data.get("id"), one_line(data.get("exc")))
        return True


celery_consumer.logger.addFilter(OneLineRefusals())
logging.getLogger("celery.beat").addFilter(OneLineBeatErrors())
task_retry.connect(_remember_retry)
trace.logger.addFilter(QuietOutageRetries())
