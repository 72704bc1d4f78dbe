"""One exception tree for the whole product.

Every error the services raise derives from :class:`WorkManagerError`. Each class carries
the SPEC §6.1 error ``code`` and its HTTP status, so every adapter (HTTP, MCP, CLI, Celery)
maps an error the same way, from this one place. Transient errors (the caller may retry the
same request later) derive from :class:`TransientError`; everything else is permanent.
A class's docstring is its default message.
"""

from __future__ import annotations

import json
from typing import Any


class WorkManagerError(Exception):
    """An error in workmanager."""

    code = "internal_error"
    http_status = 500
    #: What a person can do about it (the CLI prints it under the error line), or None.
    hint: str | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        hint: str | None = None,
        **fields: Any,
    ) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.details = details
        self.fields = fields
        if hint is not None:
            self.hint = hint
        super().__init__(self.message)

    def text(self) -> str:
        """The error as a person reads it, never a traceback: ``error [code]: message``,
        its details under it (``path: message (validator)`` per validation error, ``key:
        value`` for a mapping), then ``hint: …``. What the CLI and the workers' start-up
        checks print."""
        lines = [f"error [{self.code}]: {self.message}", *_detail_lines(self.details)]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def one_line(self) -> str:
        """The message and, for a validation failure, where (its first three paths), on
        one line: what a log line or a report of many says of one error."""
        details = self.details if isinstance(self.details, list) else []
        where = "; ".join(
            f"{d.get('path')}: {d.get('message')}" for d in details[:3] if isinstance(d, dict)
        )
        return f"{self.message} ({where})" if where and where not in self.message else self.message

    def to_dict(self) -> dict[str, Any]:
        """The SPEC §6.1 error body: ``{"code", "message", "details"?}``."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


def _detail_lines(details: Any) -> list[str]:
    if details is None:
        return []
    if isinstance(details, list) and all(isinstance(d, dict) and "path" in d for d in details):
        return [f"  {d['path']}: {d.get('message')} ({d.get('validator')})" for d in details]
    if isinstance(details, dict):
        return [f"  {key}: {_shown(value)}" for key, value in details.items()]
    return [f"  {_shown(details)}"]


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class TransientError(WorkManagerError):
    """A temporary failure; the same request may succeed later."""


class PermanentError(WorkManagerError):
    """A failure that retrying the same request will not fix."""


class Unavailable(TransientError):
    """A backing service (database, Redis or broker) is unavailable."""

    code = "unavailable"
    http_status = 503


class SchemaOutdated(Unavailable):
    """The database schema is older than this code: run ``workmanager db upgrade``."""

    hint = "run `workmanager db upgrade`"


class Contention(Unavailable):
    """A deadlock victim, a serialization failure or a lock timeout: nothing changed; the
    ``run()`` methods try again, and 503 (try again) when it still loses."""

    hint = "try again; nothing was changed"


class DatabaseMissing(Unavailable):
    """The database does not exist: create it, then run ``workmanager db upgrade``."""

    hint = "run `workmanager db upgrade`"


class BrokerRefused(Unavailable):
    """The broker refused the credentials or the virtual host: no retry mends it."""

    hint = (
        "check the user, password and virtual host in WORK_MANAGER_BROKER_URL "
        "(RabbitMQ: `rabbitmqctl list_users`, `rabbitmqctl list_vhosts`)"
    )


class ConfigurationError(PermanentError):
    """The configuration is invalid."""

    code = "configuration_error"


class UsageError(PermanentError):
    """The command line is not valid (a missing option, a value of the wrong form)."""

    code = "usage_error"


class Aborted(PermanentError):
    """A command stopped before it finished: its question was not answered yes (no
    terminal to answer on, or "n"), or it was interrupted. A CLI outcome."""

    code = "aborted"
    hint = "answer y, or pass --yes to a command that asks"


class TimedOut(PermanentError):
    """What the command waited for did not happen in time (``orders create --wait
    --timeout``); the work goes on. A CLI outcome, never an HTTP answer."""

    code = "timed_out"


class SchemaBehind(PermanentError):
    """The database schema is behind this code's migrations: run `workmanager db upgrade`.

    Found at start-up (``workmanager serve``, Celery workers) and by ``/readyz``
    (:func:`workmanager.db.migrate.require_head`); the process does not start, or is not
    ready, until the schema is upgraded. Never an HTTP answer (``/readyz`` says 503)."""

    code = "schema_outdated"


# --- 400 -----------------------------------------------------------------------------------
class MalformedJSON(PermanentError):
    """The request body is not valid JSON."""

    code = "malformed_json"
    http_status = 400


class InvalidAgentMetadata(PermanentError):
    """The agent metadata headers are invalid."""

    code = "invalid_agent_metadata"
    http_status = 400


class InvalidQuery(PermanentError):
    """The query names an unknown filter, sort or field."""

    code = "invalid_query"
    http_status = 400


# --- 401 / 403 / 404 -------------------------------------------------------------------------
class Unauthenticated(PermanentError):
    """A valid bearer token is required."""

    code = "unauthenticated"
    http_status = 401


class Forbidden(PermanentError):
    """This principal may not do that."""

    code = "forbidden"
    http_status = 403


class WorkOrderRequired(PermanentError):
    """This route requires an X-Work-Order-ID of an order in an allowed state."""

    code = "work_order_required"
    http_status = 403


class NotFound(PermanentError):
    """No such order or item."""

    code = "not_found"
    http_status = 404


# --- 409 -----------------------------------------------------------------------------------
class LeaseConflict(PermanentError):
    """The lease token is not the item's current lease."""

    code = "lease_conflict"
    http_status = 409


class LeaseExpired(PermanentError):
    """The lease has expired."""

    code = "lease_expired"
    http_status = 409


class NoItemsAvailable(PermanentError):
    """No item is available to lease."""

    code = "no_items_available"
    http_status = 409


class IllegalStateTransition(PermanentError):
    """That state transition is not allowed."""

    code = "illegal_state_transition"
    http_status = 409

    def __init__(
        self,
        message: str | None = None,
        *,
        kind: str = "",
        from_state: str = "",
        to_state: str = "",
        details: Any = None,
    ) -> None:
        # plain strings: a state enum's repr (<OrderState.APPROVED: 'approved'>) is no message
        from_state, to_state = str(from_state), str(to_state)
        if message is None and kind:
            message = f"{kind} cannot go from {from_state!r} to {to_state!r}"
        if details is None and kind:
            details = {"kind": kind, "from": from_state, "to": to_state}
        super().__init__(message, details=details)
        self.kind, self.from_state, self.to_state = kind, from_state, to_state


class NotReadyForApproval(PermanentError):
    """The order is not ready for approval."""

    code = "not_ready_for_approval"
    http_status = 409


class IdempotencyInFlight(PermanentError):
    """A request with this idempotency key is still being processed."""

    code = "idempotency_in_flight"
    http_status = 409


class RequestTimeout(PermanentError):
    """The request's body did not arrive in time (``WORK_MANAGER_API_BODY_TIMEOUT_SECONDS``):
    a client that opens a request and trickles its body holds no memory for long."""

    code = "request_timeout"
    http_status = 408


# --- 413 / 422 / 428 -----------------------------------------------------------------------
class PayloadTooLarge(PermanentError):
    """The body, part or number of parts exceeds the configured limit."""

    code = "payload_too_large"
    http_status = 413


#: A refusal's ``details`` list at most this many problems; a last entry says more were
#: found (a value with a million bad leaves is not answered with a million entries).
MAX_DETAILS = 50


class ValidationFailed(PermanentError):
    """The data failed validation."""

    code = "validation_failed"
    http_status = 422

    def __init__(
        self,
        first: Any = None,
        message: str | None = None,
        *,
        details: Any = None,
        hint: str | None = None,
    ) -> None:
        """``ValidationFailed(details, message)`` (the project's own calls), or as every
        other error is made, ``ValidationFailed("why", details=[...], hint=...)``, or
        ``ValidationFailed("why")`` alone (a hook's refusal)."""
        if isinstance(first, str):  # the message first, as every other error takes it
            first, message = (message, first) if not isinstance(message, str) else (first, message)
            if isinstance(first, str):  # two texts: the second is the message's details
                first = [problem("$", first, "custom")]
        if details is None:
            details = first
        if details is None and message is not None:
            # ``raise ValidationFailed("why")`` from a hook: keep the {path, message,
            # validator} shape of ``details`` that adapters and agents rely on.
            details = [problem("$", message, "custom")]
        if isinstance(details, list) and len(details) > MAX_DETAILS:
            more = problem(
                "$", f"more problems not listed: the first {MAX_DETAILS} are", "truncated"
            )
            details = [*details[:MAX_DETAILS], more]
        super().__init__(message, details=details, hint=hint)

    @classmethod
    def at(
        cls, path: str, message: str, validator: str, summary: str | None = None
    ) -> ValidationFailed:
        """One error, at ``path`` (``summary``: the error's message, when not the default)."""
        return cls([problem(path, message, validator)], summary)


def problem(path: str, message: str, validator: str) -> dict[str, str]:
    """One entry of :class:`ValidationFailed`'s ``details``: where, why, which rule."""
    return {"path": path, "message": message, "validator": validator}


class UnknownOrderType(PermanentError):
    """No order type is registered under that name."""

    code = "unknown_order_type"
    http_status = 422


class MissingParts(PermanentError):
    """Required parts are missing."""

    code = "missing_parts"
    http_status = 422


class IdempotencyKeyReused(PermanentError):
    """This idempotency key was used with a different request (body, lease token or wait).

    Its fingerprint: the body, the lease token presented, an approval's ``wait``."""

    code = "idempotency_key_reused"
    http_status = 422


class DedupeKeyReused(PermanentError):
    """This dedupe key names an existing order of another type or payload."""

    code = "dedupe_key_reused"
    http_status = 422


class IdempotencyKeyRequired(PermanentError):
    """This endpoint requires an idempotency key header."""

    code = "idempotency_key_required"
    http_status = 428


# --- 429 -----------------------------------------------------------------------------------
class RateLimited(TransientError):
    """Too many requests: a rate limit was reached; try again after ``retry_after`` seconds."""

    code = "rate_limited"
    http_status = 429

    def __init__(
        self, message: str | None = None, *, retry_after: int = 1, details: Any = None
    ) -> None:
        #: Whole seconds until a token is available again (HTTP ``Retry-After``).
        self.retry_after = max(1, int(retry_after))
        super().__init__(message, details=details or {"retry_after": self.retry_after})


class ApplyFailed(PermanentError):
    """The order type's apply raised an error."""

    code = "apply_failed"
