"""How the user's own code ends: its failure, or the process it runs in being stopped.

A type's hook, an agent's handler, an allocator or an apply is the user's code: what it raises
is its failure, recorded against it; a stop signal arriving while it runs is not.
"""

from __future__ import annotations

import asyncio

#: What the user's own code (a type's hook, an agent's handler, an allocator) may raise
#: that is its failure, ``sys.exit()``, ``CancelledError`` and ``GeneratorExit`` too:
#: caught as ``Exception`` only, a threads-pool agent's slot hung for good, unlogged.
USER_CODE_FAILURES = (Exception, SystemExit, asyncio.CancelledError, GeneratorExit)


#: The exit codes billiard's stop handler gives a Celery pool child, ``-(256 - signal)``,
#: for the signals it stops on (SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2).
STOP_EXIT_CODES = frozenset(-(256 - s) for s in (1, 2, 3, 15, 10, 12))


def stopped_by_signal(exc: BaseException) -> bool:
    """The ``SystemExit`` a stop signal raises in a Celery pool child (billiard's handler:
    -241 for SIGTERM, as a process group's stop sends it): the process is being ended,
    not the user's code failing. A handler's own ``sys.exit(n)``, ``sys.exit(-1)`` too, is
    its failure (:data:`USER_CODE_FAILURES`); any negative code was taken for a stop, and a
    handler's ``sys.exit(-1)`` gave its attempt back for ever."""
    return isinstance(exc, SystemExit) and exc.code in STOP_EXIT_CODES
