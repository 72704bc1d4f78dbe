"""How finished work reaches a database or lock store that is out of reach for a moment:
tried again, not thrown away (:class:`Patience`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import TransientError

T = TypeVar("T")


class Patience:
    """How a finished piece of work reaches a database or lock store that is out of reach
    for a moment: ``send()`` tried again on a :class:`TransientError` for up to
    ``seconds``, waiting ``first_wait`` then twice as long each time (at most
    ``longest_wait``), one logged line per try ("could not <doing> <what>"); the last
    error passes on. Throwing the work away at the first 503 did it again (a consumer
    agent's result) or stalled it (an apply recorded by nobody until its claim lapsed)."""

    def __init__(
        self, doing: str, seconds: float = 30.0, first_wait: float = 0.5, longest_wait: float = 5.0
    ) -> None:
        self.doing, self.seconds = doing, seconds
        self.first_wait, self.longest_wait = first_wait, longest_wait

    def call(self, send: Callable[[], T], what: str, log: logging.Logger) -> T:
        wait, deadline = self.first_wait, time.monotonic() + self.seconds
        while True:
            try:
                return send()
            except TransientError as exc:
                if time.monotonic() + wait > deadline:
                    raise
                log.warning(
                    "could not %s %s (%s); trying again in %g s",
                    self.doing,
                    what,
                    exc.message,
                    wait,
                )
                time.sleep(wait)
                wait = min(wait * 2, self.longest_wait)
