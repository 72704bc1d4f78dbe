"""Log lines an operator reads during an outage: one line each, and the same one at most
once in a while.

An outage makes every request fail the same way: logged per request, the API wrote 535
warnings a second while the database was away, each split over two lines by the
driver's text. :class:`Throttled` says a thing the first time, then at most once per
``every`` seconds with how many times it was not said in between; :func:`one_line`
flattens a driver's multi-line message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from .display import shown


def one_line(text: object) -> str:
    """``text`` with its line breaks and runs of whitespace as single spaces."""
    return " ".join(str(text).split())


#: The most of a caller's text one log line carries: a 1 MB value, or a path of 60 KB
#: sent before authentication, filled the log line after line.
LOGGED_MAX = 500


def logged(text: object, at_most: int = LOGGED_MAX) -> str:
    """A caller's text as a log line carries it: on one line (a ``%0A`` in a path forged
    a line of the server's own), its control and bidi characters escaped, at most
    ``at_most`` characters and ``…``."""
    whole = str(text)
    said = shown(one_line(whole[: at_most * 2]))  # escapes lengthen: cut twice
    return said if len(whole) <= at_most and len(said) <= at_most else f"{said[:at_most]}…"


def first_line(exc: object) -> str:
    """An error as one line: the first line of its text, or its type's name when it has
    none (what a library's error says beside ours, without its traceback)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


class Throttled:
    """A logger's lines, each ``key`` said at most once per ``every`` seconds."""

    def __init__(
        self,
        logger: logging.Logger,
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.every, self.clock = logger, every, clock
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def due(self, key: str) -> str | None:
        """``None`` when ``key`` was said within ``every`` seconds (it is counted then);
        else what to add to its line: how many were not said since the last one ("")."""
        now = self.clock()
        with self._lock:
            said, quiet = self._last.get(key, (float("-inf"), 0))
            if now - said < self.every:
                self._last[key] = (said, quiet + 1)
                return None
            self._last[key] = (now, 0)
        return f" (and {quiet} more like it in the last {self.every:g} s)" if quiet else ""

    def warning(self, key: str, message: str, *args: object) -> None:
        """Log ``message % args`` at WARNING, unless ``key`` was said within ``every``
        seconds (then it is counted, and the next line says how many were not)."""
        more = self.due(key)
        if more is not None:
            # one line, its control characters as escapes (a request's path is the caller's)
            self.logger.warning(shown(one_line(message % args if args else message)) + more)


_outages = Throttled(logging.getLogger("workmanager.outage"))


def unavailable(code: str, message: str, kind: str, where: str) -> None:
    """A call answered 503 (the database, Redis or the broker away): said once in a
    while per ``kind`` of error, naming ``where`` (the request) and why; unlogged, an
    outage's 503s left the server's log empty while every client was refused."""
    _outages.warning(kind, "%s answered 503 [%s]: %s", where, code, message)


def some(ids: Sequence[object], at_most: int = 10) -> str:
    """The first ``at_most`` of ``ids``, comma-separated, and ``…`` when there are more."""
    return ", ".join(map(str, ids[:at_most])) + (" …" if len(ids) > at_most else "")
