"""The broker's transport errors, said as the project's: a producer that could not send
(``workmanager orders create``) and a worker or beat whose broker refuses its credentials
at start-up get one line (``error [unavailable]``) naming the broker and the fix."""

from __future__ import annotations

from workmanager.db.embedded import (
    NO_EMBEDDED_DIRECTORY,
    embedded_file,
    missing_embedded_directory,
)
from workmanager.db.session import display_url
from workmanager.errors import BrokerRefused, DatabaseMissing, Unavailable
from workmanager.saying import first_line

#: What the transports raise when the broker refuses the credentials or the virtual host
#: (py-amqp: ACCESS_REFUSED 403, NOT_ALLOWED 530; redis-py: AUTH refused).
REFUSALS = frozenset({"AccessRefused", "NotAllowed", "AuthenticationError", "AuthorizationError"})

#: How long the start-up check waits for the broker to answer, in seconds.
CHECK_TIMEOUT = 5.0


def transport_errors() -> tuple[type[BaseException], ...]:
    """What the broker's transport raises when it cannot connect or is refused, beside
    kombu's OperationalError (which wraps only the errors kombu would retry): its
    ``connection_errors`` and ``channel_errors`` (py-amqp's AccessRefused for a wrong
    password, NotAllowed for a missing vhost; redis-py's AuthenticationError). KeyError,
    which kombu's Redis transport counts among them, is a bug here, never the broker."""
    from tasks.app import app

    try:
        connection = app.connection_for_write()
        errors = (*connection.connection_errors, *connection.channel_errors)
    except Exception:  # a transport that cannot even load: the error already raised stands
        return ()
    return tuple(e for e in errors if e is not KeyError)


def refused(exc: BaseException | None) -> bool:
    """``exc``, or what it wraps (kombu re-raises redis-py's errors as OperationalError),
    is a refusal of the credentials or the virtual host."""
    seen = 0
    while exc is not None and seen < 5:
        if any(cls.__name__ in REFUSALS for cls in type(exc).__mro__):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def shown_url(broker_url: str) -> str:
    """The broker's URL as printed: its password masked, ``sqla+`` kept."""
    bare = broker_url.removeprefix("sqla+")
    return ("sqla+" if bare != broker_url else "") + display_url(bare)


def refusal(broker_url: str, exc: BaseException) -> BrokerRefused:
    """The one-line error for a broker that refused the credentials or the virtual host."""
    shown = shown_url(broker_url)
    return BrokerRefused(
        f"the broker at {shown} refused the credentials/vhost: {first_line(exc)}",
        details={"broker_url": shown},
    )


def broker_unavailable(broker_url: str, exc: Exception) -> Unavailable:
    """The one-line error for a broker that could not take the order: its URL (password
    masked) and the fix. The embedded default's broker is a SQLite file under ``./var``,
    which only ``workmanager db upgrade`` creates."""
    if refused(exc):
        return refusal(broker_url, exc)
    if missing_embedded_directory(broker_url) is not None:
        hint = NO_EMBEDDED_DIRECTORY
    elif (
        embedded_file(broker_url) is not None and "locked" in str(exc).lower()
    ):  # the file is fine: held
        hint = (
            "another process held the embedded broker's SQLite lock for longer than the"
            " wait: try again; many processes sending at once want Redis or RabbitMQ"
        )
    else:
        hint = "is the broker running? check WORK_MANAGER_BROKER_URL"
    return Unavailable(
        f"could not send the order to the broker at {shown_url(broker_url)}: {first_line(exc)}",
        details={"broker_url": shown_url(broker_url)},
        hint=hint,
    )


def check_credentials(broker_url: str) -> None:
    """At a worker's or beat's start-up: raise :func:`refusal` when the broker refuses the
    credentials or the virtual host, which no retry mends (Celery would print its
    traceback and exit). A broker that does not answer is left to Celery, which retries
    the connection as on any outage; so is anything else the connection raises."""
    from tasks.app import app

    try:
        with app.connection_for_write(connect_timeout=CHECK_TIMEOUT) as connection:
            connection.connect()
    except Exception as exc:
        if refused(exc):
            raise refusal(broker_url, exc) from exc


def check_embedded_directory(broker_url: str) -> None:
    """At a worker's or beat's start-up: raise :class:`DatabaseMissing` when the embedded
    broker's directory does not exist (started from another directory than ``db upgrade``
    ran in). Not an outage Celery could wait out: it reconnected to the missing file
    several times a second, for ever, a warning each time."""
    missing = missing_embedded_directory(broker_url)
    if missing is not None:
        raise DatabaseMissing(
            missing,
            details={"broker_url": shown_url(broker_url)},
            hint=NO_EMBEDDED_DIRECTORY,
        )
