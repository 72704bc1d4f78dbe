"""Rate limits (SPEC §13): token buckets per agent and per tenant, on checkout and on API
requests as a whole.

``rate.py`` the ``<count>/<s|m|h>`` value; ``base.py`` the bucket and the store port;
``rules.py`` which buckets a call takes a token from (the one place); ``limiter.py`` the
check that raises :class:`workmanager.errors.RateLimited`; ``database.py`` (PostgreSQL,
SQLite) and ``redis.py`` + ``lua/take.lua`` the stores. Nothing here runs, and no store is
built, while every limit is unset.
"""

from .rate import Rate, parse_rate

__all__ = ["Rate", "parse_rate"]
