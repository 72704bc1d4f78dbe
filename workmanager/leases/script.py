"""A Lua script run by its SHA1 with ``EVALSHA``: the lock stores' and the rate limiter's.

redis-py's ``Script.__call__`` re-imports its pipeline classes and tests the client
against them on every call: ~9 µs of Python a call on the 2-core machine (an alternating
loop of 3,000 calls each: 59 µs against 50 µs for the same ``EVALSHA``), a sixth of a lock
store's heartbeat. The clients here are never pipelines, so the call goes straight to
``evalsha``; a server that lost the script (restarted, ``SCRIPT FLUSH``) answers
``NOSCRIPT``, and redis-py's own call then loads it and runs it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Script:
    def __init__(self, client: Any, source: str) -> None:
        from redis.exceptions import NoScriptError

        self.client = client
        self._registered = client.register_script(source)  # its SHA1, computed here
        self._missing = NoScriptError

    @property
    def sha(self) -> str:
        """The script's SHA1, what ``EVALSHA`` names it by."""
        return str(self._registered.sha)

    def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return self.client.evalsha(self.sha, len(keys), *keys, *args)
        except self._missing:
            return self._registered(keys=keys, args=args)  # loads it, then runs it
