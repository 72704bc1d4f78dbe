"""Running an order type's validation: the JSON Schema, then the custom hook.

The one rule for ``validate_submission``, ``validate_part`` and ``validate_assembled``
(and, at the end, what ``can_approve`` may answer):
the hook runs on every value that passed its schema, and when there is no schema — never
skipped, and never on a value the schema already refused (the hook may then rely on what
the schema guarantees, and the agent gets the schema's errors alone). A hook that raises
something other than ``ValidationFailed`` (a bug in the order type) is logged and reported
as a validation error naming the exception, never as a 500.

Evidence sent beside a value (a whole result or a part) is checked in the same pass: its
schema (``evidence_schema`` / ``part_evidence_schema``) runs beside the value's, and the
hook runs only when both passed. Absent evidence (``None``) is an error only when the type
``requires_evidence``; otherwise no evidence schema applies to it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import (
    NotReadyForApproval,
    ValidationFailed,
    WorkManagerError,
    problem,
)
from .jsonvalues import readable, storable
from .schema import schema_errors
from .usercode import USER_CODE_FAILURES

log = logging.getLogger("workmanager.hooks")
T = TypeVar("T")


def _as_errors(details: Any, path: str) -> list[dict[str, Any]]:
    """A hook's refusal as details at ``path``: what it said at ``$`` (the value it was
    given: ``ValidationFailed("why")`` alone) or under it (``$.answer``) is said where that
    value stands in the request (``result``, ``result.answer``); other paths as written."""
    if isinstance(details, list) and all(isinstance(d, dict) for d in details):
        return [{**d, "path": _rebased(d.get("path"), path)} for d in details]
    return [problem(path, str(details), "custom")]


def _rebased(said: Any, path: str) -> Any:
    if not path or not isinstance(said, str) or not said.startswith("$"):
        return said
    rest = said[1:]
    return path + rest if rest[:1] in ("", ".", "[") else said


def guarded(fn: Callable[[], T], path: str, hook: str = "check") -> T:
    """Call an order-type hook (``hook``: its name, said in the error); a crash becomes
    ``ValidationFailed`` at ``path``."""
    try:
        return fn()
    except ValidationFailed as refused:  # its words stored as near as can be (a NUL in
        refused.message = storable(refused.message)  # them refused the whole record on
        refused.details = storable(refused.details)  # PostgreSQL; a datetime any record)
        raise
    except USER_CODE_FAILURES as exc:
        log.exception("order-type hook %s failed at %s", hook, path)
        raise ValidationFailed.at(
            path,
            readable(f"{type(exc).__name__}: {exc}"),
            "hook_error",
            f"the order type's {hook} raised {type(exc).__name__}",
        ) from exc


@dataclass(frozen=True)
class Evidence:
    """Evidence sent beside a value: what it is, its schema (``None``: any) and whether
    the type requires some."""

    value: Any
    schema: dict[str, Any] | None = None
    required: bool = False

    def errors(self) -> list[dict[str, Any]]:
        if self.value is None:
            if not self.required:
                return []
            message = "this order type requires evidence"
            return [problem("evidence", message, "required")]
        return schema_errors(self.schema, self.value, "evidence") if self.schema is not None else []


def own_hook(order_type: Any, name: str) -> bool:
    """Whether the order type defines the validation hook ``name``, on its class or as an
    instance attribute (the base class's does nothing: not called, and the value not
    copied for it)."""
    from .order_types import OrderType

    hook = getattr(order_type, name)
    return getattr(hook, "__func__", hook) is not getattr(OrderType, name)


def check(
    schema: dict[str, Any] | None,
    instance: Any,
    path: str,
    hook: Callable[[Any], Any] | None,
    evidence: Evidence | None = None,
    hook_name: str = "check",
) -> None:
    """Validate ``instance`` against ``schema`` (and ``evidence`` against its own), then
    (only when all passed) run ``hook`` on a copy of it; raise the errors of what refused
    it. The copy: what is stored is what was checked (a hook that changed the value it
    was given changed it after its schema and storable checks: unchecked values stored,
    or a 500 from the driver), and the caller's own value is left as it was."""
    errors = schema_errors(schema, instance, path) if schema is not None else []
    errors += evidence.errors() if evidence is not None else []
    if not errors and hook is not None:
        try:
            # ~20 ms a MB of result (a JSON round trip is slower on floats): the price
            # of a hook that cannot change what is stored, paid only by types with one
            returned = guarded(lambda: hook(copy.deepcopy(instance)), path, hook_name)
        except ValidationFailed as exc:
            errors = _as_errors(exc.details, path)
        else:
            if returned is not None:  # False, or a list of problems: never an acceptance
                why = (
                    f"the order type's {hook_name} returned {type(returned).__name__}; it must"
                    " raise ValidationFailed to refuse and return None to accept"
                )
                errors = [problem(path, why, "hook_error")]
    if errors:
        where = _where(errors, path)
        raise ValidationFailed(errors, f"{len(errors)} validation error(s) in {where}")


def check_result(
    order_type: Any, view: Any, result: Any, path: str, evidence: Evidence | None = None
) -> None:
    """A result an item is submitted with, sent whole (``result``), or assembled by
    finalize (``assembled_result``) for an item that asks for no parts (its whole result:
    a finalize with no parts submitted ``{}`` past both); an item of parts meets
    ``validate_assembled`` instead, as upstream's. ``result_schema`` (and the evidence's),
    then ``validate_submission`` when they passed (SPEC §4.1: never skipped)."""
    schema = guarded(lambda: order_type.result_schema(view), path, "result_schema()")
    hook = (
        (lambda value: order_type.validate_submission(view, value))
        if own_hook(order_type, "validate_submission")
        else None
    )
    check(schema, result, path, hook, evidence, "validate_submission()")


def _where(errors: list[dict[str, Any]], path: str) -> str:
    on_evidence = [str(e.get("path", "")).startswith("evidence") for e in errors]
    if all(on_evidence):
        return "evidence"
    return f"{path} and evidence" if any(on_evidence) else path


def can_approve(order_type: Any, order: Any) -> bool:
    """The type's cross-item check; a hook that raises, or answers something other than
    True or False (a forgotten ``return`` is None), refuses approval naming that (409,
    not a 500, and not the plain "refused" of a False)."""
    try:
        answer = order_type.can_approve(order)
        if isinstance(answer, bool):
            return answer
        log.error("can_approve of %s returned %s, not a bool", order.id, type(answer).__name__)
        raise NotReadyForApproval(
            f"the order type's can_approve check returned {type(answer).__name__}: it must"
            " return True or False (a forgotten `return`?)",
            details={"order_id": str(order.id), "returned": type(answer).__name__},
        )
    except WorkManagerError as refused:  # said as JSON can hold it, as guarded() does
        refused.message, refused.details = storable(refused.message), storable(refused.details)
        raise
    except USER_CODE_FAILURES as exc:
        log.exception("can_approve of %s raised", order.id)
        raise NotReadyForApproval(
            f"the order type's can_approve check raised {type(exc).__name__}: {exc}",
            details={"order_id": str(order.id), "exception": type(exc).__name__},
        ) from exc
