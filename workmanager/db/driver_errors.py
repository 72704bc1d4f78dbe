"""Driver errors as the project's errors: the one module that translates them.

psycopg (the PostgreSQL store's raw connections, and under SQLAlchemy), sqlite3 (under
SQLAlchemy): each caller hands the driver's own exception (``DBAPIError.orig`` for the
ORM) to :func:`translate`, and raises what it returns:

* a value the database cannot store (a NUL in text, an out-of-range number) that slipped
  past the checks at the edge → :class:`ValidationFailed` (422): the caller's input;
  one too large for it (class 54) → :class:`PayloadTooLarge` (413), never retried;
* tables or columns missing → :class:`SchemaOutdated` (503, "run `workmanager db
  upgrade`");
* a SQLite URL naming a file that is not a database, or a directory → :class:`Unavailable`
  with a hint;
* the database missing → :class:`DatabaseMissing`;
* the server unreachable or gone, a lock timeout, the server read-only (a standby), a
  privilege missing, no schema on the search path (:data:`SERVER_STATES`) →
  :class:`Unavailable` (503 with ``Retry-After``; a retry for Celery tasks).

* a deadlock victim, a serialization failure or a lock timeout (:func:`is_retryable`) →
  :class:`Contention` (503): it changed nothing; ``run()`` runs the transaction again
  (a read during a migration's ALTERs was such a victim, and answered 500).

Anything else is a bug and stays the driver's error.
"""

from __future__ import annotations

from ..errors import (
    Contention,
    DatabaseMissing,
    PayloadTooLarge,
    SchemaOutdated,
    Unavailable,
    ValidationFailed,
    WorkManagerError,
)
from ..saying import one_line

#: PostgreSQL: deadlock detected, serialization failure, a lock not had within
#: ``lock_timeout`` (the checkout under lease limits sets one: leases/limits.py).
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
#: PostgreSQL: undefined table, undefined column (a schema older than the code).
MISSING_SCHEMA_SQLSTATES = frozenset({"42P01", "42703"})
#: PostgreSQL class 22: data exception (the value, not the statement).
_DATA_EXCEPTION_CLASS = "22"
#: PostgreSQL class 54: program limit exceeded (a jsonb string past 256 MB, too many
#: columns): the value is too large for the database, whatever the settings let through.
_LIMIT_EXCEEDED_CLASS = "54"
#: SQLite: a table or column missing (a read, and an INSERT's "table t has no column named
#: c"): a schema older than the code.
_SQLITE_MISSING_SCHEMA = ("no such table", "no such column")
_SQLITE_NO_COLUMN = " has no column named "
#: SQLite: the URL names something that is not a database file (another file, a directory).
_SQLITE_UNOPENABLE = ("file is not a database", "unable to open database file")
#: PostgreSQL: what the server says of itself or of this role, whatever the driver's class
#: for it: 503 with a hint (a retry for Celery tasks), mended on the server's side.
SERVER_STATES = {
    "25006": (
        "the server is read-only",
        "a standby after a failover, or default_transaction_read_only on: point "
        "WORK_MANAGER_DATABASE_URL at the primary",
    ),
    "25P03": (
        "the server ended a transaction left idle",
        "try again; if it persists, raise the server's idle_in_transaction_session_timeout",
    ),
    "42501": (
        "the database role lacks a privilege",
        "grant the role in WORK_MANAGER_DATABASE_URL every privilege on the workmanager "
        "tables, sequences and functions (docs/operations.md, 'Database roles')",
    ),
    "3F000": (
        "no schema to work in",
        "the role's search_path names no schema that exists: create it, or set the path "
        "(ALTER ROLE ... SET search_path)",
    ),
}
_CONNECTION_MARKERS = (
    "resolve host",  # psycopg: "failed to resolve host 'db.example': ..."
    "translate host name",  # libpq: "could not translate host name ..."
    "connection",
    "could not connect",
    "server closed",
    "terminating",
    "timeout",
    "locked",
)


def sqlstate(orig: BaseException) -> str | None:
    """The SQLSTATE of a driver error (psycopg), if it has one."""
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return str(code) if code else None


def is_retryable(orig: BaseException) -> bool:
    """A deadlock victim, a serialization failure or a lock waited for past its timeout:
    nothing was changed, run it again."""
    return sqlstate(orig) in RETRYABLE_SQLSTATES


def unstorable(orig: BaseException) -> ValidationFailed:
    first = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
    return ValidationFailed.at("$", first, "storable", "a value cannot be stored")


def translate(
    orig: BaseException,
    where: str = "the database",
    *,
    data_error: bool = False,
    operational: bool = False,
    invalidated: bool = False,
    outage: bool = False,
) -> WorkManagerError | None:
    """The project's error for a driver error ``orig`` (``None``: not one of ours).

    ``where`` names the database in hints (a display URL); ``data_error`` /
    ``operational``: the driver classed it so (SQLAlchemy's ``DataError`` /
    ``OperationalError``, or psycopg's); ``invalidated``: the pool dropped the connection;
    ``outage``: an operational error is an outage whatever it says (psycopg's are about
    the connection or the server; SQLite's also cover SQL mistakes, which are bugs)."""
    text = str(orig)
    code = sqlstate(orig)
    if is_retryable(orig):  # the first line: the CONTEXT after it shows our SQL
        first = text.splitlines()[0] if text else type(orig).__name__
        return Contention(f"database contention, try again: {first}")
    if data_error or (code or "").startswith(_DATA_EXCEPTION_CLASS):
        return unstorable(orig)
    if (code or "").startswith(_LIMIT_EXCEEDED_CLASS):  # not an outage: never retried
        first = text.splitlines()[0] if text else type(orig).__name__
        return PayloadTooLarge(f"the database cannot store a value this large: {first}")
    if (
        code in MISSING_SCHEMA_SQLSTATES
        or text.startswith(_SQLITE_MISSING_SCHEMA)
        or _SQLITE_NO_COLUMN in text
    ):
        return SchemaOutdated(
            f"{where} has no workmanager schema or an older one ({text.splitlines()[0]})"
        )
    if code == "3D000" or ("database " in text and "does not exist" in text):
        return DatabaseMissing(
            f"database unavailable: {one_line(text)}",
            hint=f"create it (e.g. `createdb`), then run `workmanager db upgrade`; {where}",
        )
    if code in SERVER_STATES:
        state, hint = SERVER_STATES[code]
        return Unavailable(f"database unavailable: {state} ({one_line(text)})", hint=hint)
    if text.startswith(_SQLITE_UNOPENABLE):
        return Unavailable(
            f"database unavailable: {one_line(text)}",
            hint=f"is {where} a SQLite database file this process can open and write? "
            "(WORK_MANAGER_DATABASE_URL)",
        )
    if operational:
        lowered = text.lower()
        if outage or invalidated or any(m in lowered for m in _CONNECTION_MARKERS):
            hint = _connection_hint(lowered, where)
            return Unavailable(f"database unavailable: {one_line(text)}", hint=hint)
    return None


def _connection_hint(lowered: str, where: str) -> str:
    """What to do about a connection the server refused or lost (``lowered``: its text)."""
    if "too many clients" in lowered or "remaining connection slots" in lowered:
        return (
            "the server's max_connections is reached: fewer processes (each keeps a pool of"
            " connections), a pooler such as PgBouncer, or a higher max_connections"
        )
    if "resolve host" in lowered or "translate host name" in lowered:
        return f"the host name does not resolve: is {where} right? (WORK_MANAGER_DATABASE_URL)"
    if "connect" in lowered:  # not a lock timeout: the server itself
        return f"is the server running and is {where} right? (WORK_MANAGER_DATABASE_URL)"
    if "locked" in lowered:  # SQLite: one writer at a time, and one held it long
        return (
            "another process held the SQLite database's write lock for longer than"
            " the wait: try again; many processes writing at once want PostgreSQL"
        )
    return "try again; if it persists, check the database server's log"
