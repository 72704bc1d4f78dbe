"""Waiting on a condition instead of sleeping a fixed time.

A fixed sleep is either too short on a loaded CI machine or too long everywhere else; these
poll until the condition holds and fail with a message after a generous deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 10,
    what: str = "condition",
    interval: float = 0.01,
) -> Any:
    """Poll ``condition`` every ``interval`` seconds until it returns something truthy
    (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)
