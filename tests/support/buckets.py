"""Hammering a token bucket and judging what it accepted, robust to a loaded machine.

The test records every call's start, end (``time.monotonic()``) and answer. A correct bucket
of ``capacity`` tokens refilled at ``rate`` a second, created full by the first call, then
accepts a number of calls between two bounds computed from those times alone (no deadline,
no assumption about how fast the machine is):

* at most ``capacity + rate * (end of the last accepted call - start of the first call)``:
  every token it handed out was there at the start or grew in that window;
* more than ``capacity - 1 + sum(rate * span - 1)`` over the chains of refusals: a refusal
  means less than one token was left at that instant, so between two refusals the calls
  accepted took every token that grew in between (minus the one that may have been left).
  That holds only while the bucket could not have filled up to its cap between them, so a
  chain links two refusals only when both fit in ``(capacity - 1) / rate`` seconds; on a
  slow machine the chains are shorter and the bound looser, never wrong. The first
  refusal also proves the initial ``capacity - 1`` tokens were taken.

On an idle machine the bounds are about two tokens apart; a bucket with the wrong rate or
burst falls outside them (``tests/unit/test_bucket_bounds.py`` shows both cases).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Call:
    start: float
    end: float
    accepted: bool


def hammer(take: Callable[[], bool], seconds: float, threads: int = 4) -> list[Call]:
    """Call ``take()`` (True: accepted, False: refused) from ``threads`` threads for
    ``seconds``, and on past them (30 s at most) until some call was refused: every call,
    in no particular order."""
    calls: list[Call] = []
    refused = threading.Event()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def pressing() -> bool:
        now = time.monotonic()
        return now < deadline or (not refused.is_set() and now < deadline + 30)

    def run() -> None:
        mine = []
        while pressing():
            start = time.monotonic()
            accepted = take()
            mine.append(Call(start, time.monotonic(), accepted))
            if not accepted:
                refused.set()
        with lock:
            calls.extend(mine)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return calls


def bounds(calls: Sequence[Call], capacity: float, rate: float) -> tuple[float, float]:
    """(low, high): a correct bucket accepted more than ``low`` and at most ``high`` of
    ``calls`` (see the module's docstring)."""
    first = min(c.start for c in calls)
    accepted = [c for c in calls if c.accepted]
    high = capacity + rate * (max(c.end for c in accepted) - first) if accepted else capacity
    refusals = sorted((c for c in calls if not c.accepted), key=lambda c: c.start)
    if not refusals:
        return 0.0, high
    low = capacity - 1  # the first refusal: the initial tokens were all taken
    window = (capacity - 1) / rate  # under this, a drained bucket cannot fill up again
    first_end = last_start = refusals[0].end
    previous = refusals[0]
    for refusal in refusals[1:]:
        if refusal.start <= previous.end:
            continue  # overlapping refusals: their order is unknown, keep the earlier one
        if refusal.end - previous.start >= window:  # the chain ends at previous
            low += max(0.0, rate * (last_start - first_end) - 1)
            first_end = refusal.end
        last_start = refusal.start
        previous = refusal
    low += max(0.0, rate * (last_start - first_end) - 1)
    return low, high


def assert_within(calls: Sequence[Call], capacity: float, rate: float) -> None:
    """The calls accepted lie within :func:`bounds`, and the bucket was really pressed
    (some calls refused)."""
    accepted = sum(c.accepted for c in calls)
    refused = len(calls) - accepted
    low, high = bounds(calls, capacity, rate)
    seen = f"accepted {accepted}, refused {refused}, bounds ({low:.1f}, {high:.1f}]"
    assert refused > 0, f"the bucket was never emptied: {seen}"
    # 0.5: the bucket's clock (the database's or Redis's) is not the test's monotonic one
    assert low - 0.5 < accepted <= high + 0.5, seen
