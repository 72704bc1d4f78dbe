"""The exception tree: SPEC §6.1 codes and HTTP statuses, transient vs permanent, to_dict."""

from __future__ import annotations

import inspect

import pytest

from workmanager import errors
from workmanager.errors import PermanentError, TransientError, WorkManagerError

# SPEC §6.1, written out: code -> HTTP status.
SPEC_CODES = {
    "malformed_json": 400,
    "invalid_agent_metadata": 400,
    "invalid_query": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "work_order_required": 403,  # SPEC §6.4
    "not_found": 404,
    "lease_conflict": 409,
    "lease_expired": 409,
    "no_items_available": 409,
    "illegal_state_transition": 409,
    "not_ready_for_approval": 409,
    "idempotency_in_flight": 409,
    "payload_too_large": 413,
    "validation_failed": 422,
    "unknown_order_type": 422,
    "missing_parts": 422,
    "idempotency_key_reused": 422,
    "dedupe_key_reused": 422,  # SPEC §13
    "idempotency_key_required": 428,
    "rate_limited": 429,  # SPEC §13
    "unavailable": 503,
    # Not in SPEC §6.1 (it has no word for a client that stops sending its body):
    # docs/http-api.md documents it.
    "request_timeout": 408,
}
# Codes that never reach a client as such (configuration at start-up, apply in a worker,
# a command line the console's parser refused).
INTERNAL_CODES = {
    "internal_error",
    "configuration_error",
    "apply_failed",
    "usage_error",
    "timed_out",
    "aborted",  # a console command not confirmed, or interrupted
    "schema_outdated",  # the schema behind the migrations: serve and workers refuse to start
}

CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, WorkManagerError) and cls.__module__ == errors.__name__
]
ABSTRACT = {WorkManagerError, TransientError, PermanentError}
CONCRETE = [c for c in CLASSES if c not in ABSTRACT]


def _make(cls: type[WorkManagerError]) -> WorkManagerError:
    return cls()


def test_every_spec_code_has_exactly_one_class() -> None:
    """One class owns each code; a subclass may refine it (``SchemaOutdated`` is an
    ``Unavailable``) but not define a second class for the same code."""
    by_code: dict[str, list[str]] = {}
    for cls in CONCRETE:
        if "code" in vars(cls):
            by_code.setdefault(cls.code, []).append(cls.__name__)
        else:
            assert any(c.code == cls.code and "code" in vars(c) for c in cls.__mro__[1:])
    for code in SPEC_CODES:
        assert len(by_code.get(code, [])) == 1, (code, by_code.get(code))
    assert set(by_code) <= set(SPEC_CODES) | INTERNAL_CODES


@pytest.mark.parametrize("cls", CONCRETE, ids=lambda c: c.__name__)
def test_class_code_and_status(cls: type[WorkManagerError]) -> None:
    assert cls.code in SPEC_CODES or cls.code in INTERNAL_CODES
    if cls.code in SPEC_CODES:
        assert cls.http_status == SPEC_CODES[cls.code]
    else:
        assert cls.http_status == 500
    assert issubclass(cls, TransientError) != issubclass(cls, PermanentError)
    assert cls.__doc__, "the docstring is the default message"
    err = _make(cls)
    assert err.message == cls.__doc__.strip().splitlines()[0]
    assert str(err) == err.message


def test_only_unavailable_is_transient() -> None:
    """(and its refinements: a schema older than the code, a database not created yet, or
    a broker refusing the credentials, is fixed by an operator, which a retried task lives
    to see), and a rate limit reached
    (SPEC §13: the same call succeeds once the bucket has refilled)"""
    transient = {c.__name__ for c in CONCRETE if issubclass(c, TransientError)}
    assert transient == {
        "Unavailable",
        "Contention",
        "SchemaOutdated",
        "DatabaseMissing",
        "BrokerRefused",
        "RateLimited",
    }
    assert issubclass(errors.SchemaOutdated, errors.Unavailable)
    assert issubclass(errors.Contention, errors.Unavailable)
    assert issubclass(errors.BrokerRefused, errors.Unavailable)
    assert issubclass(errors.DatabaseMissing, errors.Unavailable)


def test_to_dict_shape() -> None:
    plain = errors.NotFound("order x not found")
    assert plain.to_dict() == {"code": "not_found", "message": "order x not found"}
    detailed = errors.ValidationFailed(
        [{"path": "payload.n", "message": "bad", "validator": "type"}]
    )
    body = detailed.to_dict()
    assert body == {
        "code": "validation_failed",
        "message": "The data failed validation.",
        "details": [{"path": "payload.n", "message": "bad", "validator": "type"}],
    }
    default = errors.LeaseExpired()
    assert default.to_dict() == {"code": "lease_expired", "message": "The lease has expired."}


def test_illegal_state_transition_builds_its_message_and_details() -> None:
    err = errors.IllegalStateTransition(kind="order", from_state="queued", to_state="applied")
    assert "queued" in err.message and "applied" in err.message
    assert err.to_dict()["details"] == {"kind": "order", "from": "queued", "to": "applied"}


def test_fields_are_kept() -> None:
    err = errors.LeaseConflict("stale token", details={"item_id": "i"}, item_id="i", token=3)
    assert err.fields == {"item_id": "i", "token": 3}
    assert err.details == {"item_id": "i"}


def test_a_transition_error_names_states_by_value_never_by_repr() -> None:
    from workmanager.states import OrderState

    err = errors.IllegalStateTransition(
        kind="order", from_state=OrderState.APPROVED, to_state=OrderState.QUEUED
    )
    assert err.message == "order cannot go from 'approved' to 'queued'"
    assert "<OrderState" not in str(err.to_dict())
    assert type(err.details["from"]) is str


def test_a_hint_is_kept_apart_from_the_http_body() -> None:
    err = errors.UnknownOrderType("unknown order type 'x'", hint="known types: a, b")
    assert err.hint == "known types: a, b" and "hint" not in err.to_dict()
    assert errors.SchemaOutdated().hint == "run `workmanager db upgrade`"
    assert errors.NotFound().hint is None


def test_text_is_the_error_line_its_details_and_the_hint() -> None:
    """What the CLI and the workers' start-up checks print (one rendering for both)."""
    from workmanager.errors import DatabaseMissing, ValidationFailed, problem

    refused = ValidationFailed([problem("result.title", "is required", "required")])
    assert refused.text().splitlines() == [
        "error [validation_failed]: " + refused.message,
        "  result.title: is required (required)",
    ]
    missing = DatabaseMissing("no database at /x.db", details={"url": "sqlite:////x.db"})
    assert missing.text().splitlines() == [
        "error [unavailable]: no database at /x.db",
        "  url: sqlite:////x.db",
        "hint: run `workmanager db upgrade`",
    ]


def test_validation_failed_takes_every_form_a_hook_writes() -> None:
    """Its constructor took details first; ``ValidationFailed("why", [details])`` then
    swapped the two, and ``("why", details=[...])`` was a TypeError."""
    detail = errors.problem("result.answer", "at most 10 characters", "maxLength")
    for made in (
        errors.ValidationFailed("answer too long", [detail]),
        errors.ValidationFailed("answer too long", details=[detail]),
        errors.ValidationFailed([detail], "answer too long"),
    ):
        assert (made.message, made.details) == ("answer too long", [detail])
    alone = errors.ValidationFailed("answer too long", hint="shorter")
    assert alone.details == [errors.problem("$", "answer too long", "custom")]
    assert alone.hint == "shorter"


def test_integers_up_to_4300_digits_are_storable() -> None:
    from workmanager.jsonvalues import problems

    assert problems({"n": 10**4300 - 1}) == [] and problems({"n": -(10**4300 - 1)}) == []
    (found,) = problems({"n": 10**4300})
    assert found["message"] == "an integer of more than 4300 digits"
