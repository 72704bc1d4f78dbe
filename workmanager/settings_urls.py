"""The connection URLs among the settings: the lease store's Redis (one server, or a
Redis Cluster's startup nodes), the Celery broker and result backend, and the Laravel
connection names that stand for them. Each is checked as its client will read it, so a
typo stops the process at start-up with a did-you-mean rather than when the first message
is sent.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qs, parse_qsl, urlsplit

from .errors import ConfigurationError
from .settings_values import PREFIX, _fail, _optional_str, _str


def check_cluster(url: str, prefix: str) -> None:
    """Redis Cluster has one database (0), and the lease keys carry their own hash tags."""
    parts = urlsplit(url)
    shown = shown_host(url)  # the rest of a URL may hold a password
    if parts.scheme not in ("redis", "rediss"):
        raise _fail(PREFIX + "REDIS_URL", shown, "a redis:// or rediss:// URL of any cluster node")
    if parts.path.strip("/") not in ("", "0") or "db=" in parts.query:
        db = parse_qs(parts.query).get("db", [""])[0]  # the query may hold a password
        said = shown + parts.path + (f"?db={db}" if db else "")  # what to drop
        raise _fail(PREFIX + "REDIS_URL", said, "no database number but 0 (Redis Cluster)")
    if "{" in prefix or "}" in prefix:
        raise _fail(
            PREFIX + "REDIS_PREFIX",
            prefix,
            "no '{' or '}' with WORK_MANAGER_REDIS_CLUSTER=true (the keys are hash-tagged "
            "per item; a tag in the prefix would put every key in one slot)",
        )


#: Laravel connection names the seed's configuration uses (``REDIS_CONNECTION=default``,
#: ``QUEUE_CONNECTION=redis``): they mean "the configured Redis" (or, for the queue,
#: ``database``: the SQL database), resolved once every setting is read.
REDIS_CONNECTION_NAMES = ("default", "redis", "cache")
QUEUE_CONNECTION_NAMES = ("redis", "database")


@dataclass(frozen=True)
class ConnectionName:
    """A Laravel connection name read from ``variable``, resolved by
    :func:`_resolve_connections`."""

    name: str
    variable: str


def _url(
    names: tuple[str, ...],
    expected: str,
    check: Callable[[str, str], None],
    spelled: Callable[[str], str] = str,
) -> Callable[[str, Any], str | ConnectionName]:
    """A URL that ``check(name, url)`` accepts (as ``spelled`` writes it), or one of the
    Laravel connection ``names``."""

    def parse(name: str, value: Any) -> str | ConnectionName:
        text = _str(name, value)
        if "://" in text:
            text = spelled(text)
            check(name, text)
            return text
        if text.lower() in names:
            return ConnectionName(text.lower(), name)
        raise _fail(name, value, expected)

    return parse


#: What redis-py's ``from_url`` accepts.
REDIS_SCHEMES = ("redis", "rediss", "unix")


def _scheme(url: str) -> str:
    return url.partition("://")[0].strip().lower()


def shown_host(url: str) -> str:
    """A URL as an error shows it: its scheme and host, never its password or options."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.netloc else parts.scheme


def _check_redis(name: str, url: str) -> None:
    if _scheme(url) not in REDIS_SCHEMES:
        # the scheme alone is shown: the rest of a URL may hold a password
        raise ConfigurationError(
            f"{name}: expected a redis://, rediss:// or unix:// URL, got one of scheme "
            f"{_scheme(url)!r}"
        )
    if _scheme(url) != "unix" and "," not in split(name, url).netloc:  # node lists: cluster's
        hint = "host:port, e.g. 127.0.0.1:6379; a Redis Cluster's nodes separated by commas"
        check_port(name, url, hint)
        check_redis_database(name, url)
    _check_redis_options(name, url)


def check_redis_database(name: str, url: str) -> None:
    """The database of a ``redis://`` URL, when its path names one, is a number: redis-py
    took ``/four`` for database 0, and the leases went to another database unsaid."""
    path = urlsplit(url).path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ConfigurationError(
            f"{name}: the database in {shown_host(url)!r}'s path is not a number",
            hint="redis://host:port/<number>, e.g. redis://127.0.0.1:6379/0",
        )


def _check_redis_options(name: str, url: str) -> None:
    """The URL's query options, as redis-py reads them (``?socket_timeout=abc`` raised
    ValueError from every command and ``serve``, a traceback)."""
    try:
        from redis.connection import parse_url
    except ImportError:  # the redis extra is not installed: said when it is needed
        return
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    first = url  # of a cluster's node list, the first node (its options are every node's)
    if "," in hosts:
        first = parts._replace(netloc=userinfo + at + hosts.split(",")[0]).geturl()
    try:
        parse_url(first)
    except ValueError as exc:
        raise ConfigurationError(
            f"{name}: {str(exc).replace(url, shown_host(url))}",
            hint="see redis-py's URL options (socket_timeout=5, health_check_interval=30…)",
        ) from None


def split(name: str, url: str, hint: str = "host:port, e.g. 127.0.0.1:6379") -> SplitResult:
    """``urlsplit``, its ``ValueError`` (``Invalid IPv6 URL``: a bracket left open) made a
    configuration error naming the setting."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"{name}: {exc} (a bracket left open?)", hint=hint) from None


def check_port(name: str, url: str, hint: str = "host:port, e.g. 127.0.0.1:6379") -> None:
    """A URL's port, when it has one, is a number from 1 to 65535 (a typo there raised
    ``ValueError`` from the driver on first use, a traceback from every command). Only
    the host part is shown: the rest may hold a password."""
    parts = split(name, url, hint)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        host = parts.netloc.rpartition("@")[2]
        raise ConfigurationError(
            f"{name}: the port in {host!r} is not a number from 1 to 65535",
            hint=hint,
        )


def database_url(name: str, value: Any) -> str:
    """``WORK_MANAGER_DATABASE_URL``: a SQLAlchemy URL whose port, if any, is a port; on
    PostgreSQL, one user-info part and options libpq knows (``?ssl_mode=require`` made
    every connection fail, and a worker take messages it could not store)."""
    text = _str(name, value)
    if "://" in text and not text.startswith("sqlite"):
        check_port(name, text, "host:port, e.g. postgresql+psycopg://user@127.0.0.1:5432/db")
        if text.lower().startswith("postgres"):
            _check_libpq_url(name, text)
    return text


#: libpq options whose value is a whole number (libpq or psycopg refuse another at connect).
_LIBPQ_NUMBERS = frozenset(
    {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
     "keepalives_count", "tcp_user_timeout"}
)  # fmt: skip


def _check_libpq_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    if "@" in userinfo.partition(":")[2]:  # "user:p@ss@host": the host would be "ss@host"
        raise ConfigurationError(
            f"{name}: the password holds an '@' that is not percent-encoded",
            hint="write it as %40 (and '/' as %2F, ':' in a password as %3A); an '@' in the"
            " user name alone (user@server) is read as it is",
        )
    try:
        from psycopg.pq import Conninfo
    except ImportError:  # the postgres extra is not installed: said when it is needed
        return
    known = {d.keyword.decode() for d in Conninfo.get_defaults()}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise ConfigurationError(
                f"{name}: unknown PostgreSQL connection option {key!r}",
                hint=(f"did you mean {close[0]}? " if close else "")
                + "the options are libpq's (sslmode, connect_timeout, application_name…)",
            )
        if key in _LIBPQ_NUMBERS and not value.strip().lstrip("-").isdigit():
            raise ConfigurationError(
                f"{name}: the option {key} is not a whole number ({value!r})",
                hint=f"e.g. {key}=10",
            )


def check_broker(name: str, url: str) -> None:
    """Each URL (kombu reads ``;`` as failover alternates) must name one of kombu's
    transports: the scheme, or its part before ``+`` (``sqla+sqlite://`` is the ``sqla``
    transport on ``sqlite://``), as kombu resolves it when the first message is sent."""
    from kombu.transport import TRANSPORT_ALIASES

    known = sorted(t for t in TRANSPORT_ALIASES if t.islower())
    for alternate in url.split(";"):
        scheme = alternate.partition("://")[0].strip()
        # kombu lowercases a parsed scheme, but takes the part before "+" as written
        transport = scheme.partition("+")[0] if "+" in scheme else scheme.lower()
        if transport in TRANSPORT_ALIASES:
            if "://" in alternate and transport != "sqla":  # a server's host:port (and db)
                check_port(name, alternate.strip(), "host:port, e.g. 127.0.0.1:6379")
                if scheme.lower() in ("redis", "rediss"):  # not redis+socket:///<path>
                    check_redis_database(name, alternate.strip())
                _check_broker_options(name, alternate.strip())
            elif transport == "sqla":
                _check_sqla_database(name, alternate.strip().partition("+")[2])
            continue
        close = difflib.get_close_matches(transport, known, n=1)
        raise ConfigurationError(
            f"{name}: unknown broker transport {transport!r} (expected redis://, amqp://, "
            "sqla+<database URL> or another of kombu's transports)",
            hint=(f"did you mean {close[0]}://? " if close else "")
            + "kombu's transports: "
            + ", ".join(known),
        )


def _check_broker_options(name: str, url: str) -> None:
    """The URL's query options, as kombu reads them: it makes each a keyword of its
    connection (``?socket_timeout=5``, a redis-py option, was a TypeError traceback from
    every command and worker); no connection is opened."""
    from kombu.connection import Connection

    try:
        Connection(url)  # type: ignore[no-untyped-call]
    except TypeError as exc:  # not ImportError: a transport's extra missing is said on use
        option = str(exc).rpartition(" ")[2].strip("'")
        raise ConfigurationError(
            f"{name}: kombu takes no connection option {option!r} in the broker URL",
            hint="the URL's options are kombu's (connect_timeout, heartbeat, ssl_…); "
            "a transport's own go in celeryconfig.py's broker_transport_options",
        ) from None
    except Exception:  # kombu importing a transport whose package is absent
        return  # (sqs:// without boto3, a NameError in its Kafka transport): not ours to say


def _check_sqla_database(name: str, url: str) -> None:
    """``sqla+<database URL>``: a database SQLAlchemy has a dialect for (``sqla+postgres://``
    stopped the worker with ``NoSuchModuleError`` at its first message)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ImportError):  # their text may hold the URL
        raise ConfigurationError(
            f"{name}: sqla+ names no database SQLAlchemy can open"
            + (f" (scheme {_scheme(url)!r})" if "://" in url else " (not a URL)"),
            hint="sqla+sqlite:///path/broker.db or sqla+postgresql+psycopg://user@host/db",
        ) from None


_redis_url = _url(
    REDIS_CONNECTION_NAMES,
    "a Redis URL such as redis://127.0.0.1:6379/0, or a Laravel connection name ("
    + ", ".join(REDIS_CONNECTION_NAMES)
    + ") meaning WORK_MANAGER_REDIS_URL",
    _check_redis,
)


def _sqla_spelled(url: str) -> str:
    """``sqlalchemy+…``, kombu's other name for its SQLAlchemy transport, as ``sqla+…``:
    every rule about an ``sqla+`` URL (the project's transport, whose options kombu's
    own hands to ``create_engine``, refusing them on every send) then holds for it."""
    alternates = url.split(";")
    long = "sqlalchemy+"
    return ";".join(
        "sqla+" + a.strip()[len(long) :] if a.strip().lower().startswith(long) else a
        for a in alternates
    )


_broker_url = _url(
    QUEUE_CONNECTION_NAMES,
    "a broker URL (redis://…, amqp://…, sqla+sqlite:///…), or a Laravel connection name: "
    "redis (WORK_MANAGER_REDIS_URL) or database (the SQL database, via kombu's "
    "SQLAlchemy transport)",
    check_broker,
    _sqla_spelled,
)


#: Celery's result backends a workmanager deployment may name (docs/configuration.md):
#: Redis (also through Sentinel), RPC (results as messages back over the AMQP broker), and
#: a SQL database through SQLAlchemy as ``db+<database URL>``. Celery matches the scheme as
#: written (``REDIS://`` is no backend it knows).
RESULT_BACKEND_SCHEMES = ("redis", "rediss", "sentinel", "rpc")
RESULT_BACKEND_FORMS = (
    "redis://…, rediss://…, sentinel://…, rpc:// or db+<database URL> (db+sqlite:///…, "
    "db+postgresql+psycopg://…)"
)
#: Database URL schemes a user may give without Celery's ``db+`` (SQLAlchemy's dialects).
_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def _result_backend(name: str, value: Any) -> str | None:
    """``WORK_MANAGER_RESULT_BACKEND``: empty is unset (results ignored); else a URL of one
    of :data:`RESULT_BACKEND_SCHEMES`, or ``db+`` and a database URL, as Celery resolves it
    when a worker starts (``reddis://`` would pass, then kill every worker with
    ModuleNotFoundError). Only the scheme is shown: the rest may hold a password."""
    text = _optional_str(name, value)
    if text is None:
        return None
    scheme, sep, _ = text.partition("://")
    scheme = scheme.strip()
    if sep and scheme in RESULT_BACKEND_SCHEMES:
        return _as_celery_reads(name, scheme, text)
    backend, plus, database = scheme.partition("+")
    if sep and backend == "db" and plus and database:
        return _as_celery_reads(name, "db", text)
    base = backend.lower()
    if not sep:
        got, hint = "a value that is not a URL", None
        close = difflib.get_close_matches(text.lower(), RESULT_BACKEND_SCHEMES, n=1)
        if close:
            hint = f"did you mean {close[0]}://…?"
    else:
        got, hint = f"one of scheme {scheme!r}", None
        if base == "db" or base == "database":
            hint = "did you mean db+<database URL>, e.g. db+sqlite:///results.db?"
        elif base in _SQL_SCHEMES:
            hint = f"did you mean db+{scheme}://…? (Celery's SQL result backend)"
        elif base == "amqp":
            hint = "did you mean rpc://? (Celery's amqp result backend was removed)"
        else:
            close = difflib.get_close_matches(base, (*RESULT_BACKEND_SCHEMES, "db"), n=1)
            if close:
                hint = "did you mean " + (
                    "db+<database URL>?" if close[0] == "db" else f"{close[0]}://?"
                )
    unset = "leave it unset: the pipeline needs no task results"
    raise ConfigurationError(
        f"{name}: expected a Celery result backend URL ({RESULT_BACKEND_FORMS}), got {got}",
        hint=f"{hint} Or {unset}" if hint else f"name one of those, or {unset}",
    )


def _as_celery_reads(name: str, scheme: str, url: str) -> str:
    """A result backend URL of a known form, refused where Celery would stop every worker
    at its start: ``rediss://`` without ``ssl_cert_reqs``, ``db+`` a URL of no SQLAlchemy
    dialect this install has (``db+garbage://``: NoSuchModuleError)."""
    if scheme in ("redis", "rediss"):  # as the lease store's Redis URL is checked
        check_port(name, url)
        check_redis_database(name, url)
        _check_redis_options(name, url)
    if scheme == "rediss" and "ssl_cert_reqs" not in url:
        raise ConfigurationError(
            f"{name}: a rediss:// result backend needs ssl_cert_reqs (Celery stops every"
            " worker without it)",
            hint="add ?ssl_cert_reqs=required (or optional, none)",
        )
    if scheme == "db":
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        database = url.partition("+")[2]
        try:
            make_url(database).get_dialect()
        except (ArgumentError, NoSuchModuleError, ImportError):
            raise ConfigurationError(
                f"{name}: no SQLAlchemy dialect for {_scheme(database)!r}",
                hint="db+<database URL>, e.g. db+sqlite:///results.db or db+postgresql+psycopg://…",
            ) from None
    return url
