"""Request bodies of SPEC §6, strictly typed: a wrong type in any field is a 422."""

from __future__ import annotations

import functools
import typing
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..services.inputs import PRIORITY_RANGE
from ..surface.absent import null_is_default
from ..types import NAME_MAX, SEQ_MAX

#: A priority's bounds (the column's 32 bits): the services' rule, in the schema.
LOWEST, HIGHEST = PRIORITY_RANGE.start, PRIORITY_RANGE.stop - 1


def _nullable_defaults(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The OpenAPI document says what the validator below takes: ``null`` for a field
    with a default."""
    properties = schema.get("properties", {})
    for name in _defaulted_fields(model):
        if name in properties and "anyOf" not in properties[name]:
            declared = properties[name]
            kept = {
                k: declared.pop(k) for k in ("default", "title", "description") if k in declared
            }
            properties[name] = {"anyOf": [declared, {"type": "null"}], **kept}


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", json_schema_extra=_nullable_defaults)
    #: ``null`` in a field with a default is that default (upstream's ``nullable``)
    null_is_default: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _empty_array_is_empty(cls, data: Any) -> Any:
        """``[]`` is an empty object: PHP encodes an empty array so, and upstream agents
        post one for an empty body (Laravel's ``Http::post($url)``) or an empty field of
        an object type (``"meta": []``, validated ``array`` upstream). ``null`` in a field
        with a default is that default (``"priority": null``, ``"mode": null``: upstream
        validates them ``nullable``)."""
        if isinstance(data, list) and not data:
            return {}
        if isinstance(data, dict):
            empty = [
                k for k in _object_fields(cls) if isinstance(data.get(k), list) and not data[k]
            ]
            if empty:
                data = {**data, **{k: {} for k in empty}}
            data = null_is_default(data, _defaulted_fields(cls))
        return data

    def fingerprint_fields(self) -> dict[str, Any]:
        """The fields as parsed, for the idempotency fingerprint. Not ``mode="json"``: that
        raises on a lone surrogate in a free-form key (a 500) and rewrites one in a typed
        key, where the operation must see it to refuse it with a 422."""
        return self.model_dump()


class ProposeBody(Body):
    #: any text: one no type is named (empty, too long) is an unknown one (422
    #: unknown_order_type, naming the known types), as on every other surface
    type: str
    payload: dict[str, Any]
    meta: dict[str, Any] | None = None
    priority: int = Field(default=0, ge=LOWEST, le=HIGHEST)
    dedupe_key: str | None = Field(default=None, min_length=1, max_length=191)
    #: the tenant the order belongs to (a tenant-bound token's own when absent)
    tenant_id: str | None = Field(default=None, min_length=1, max_length=191)

    def fingerprint_fields(self) -> dict[str, Any]:
        # Without a tenant, the fingerprint of a key stored before the field existed.
        fields = super().fingerprint_fields()
        if fields["tenant_id"] is None:
            del fields["tenant_id"]
        return fields


class CheckoutBody(Body):
    type: str | None = Field(default=None, min_length=1, max_length=191)
    min_priority: int | None = Field(default=None, ge=LOWEST, le=HIGHEST)
    tenant_id: str | None = Field(default=None, max_length=191)

    @model_validator(mode="before")
    @classmethod
    def _no_scope_in_the_body(cls, data: Any) -> Any:
        """Unknown fields are ignored, but not these: an ``order_id`` (or ``item_id``)
        ignored leased any item, of another order, and spent an attempt on it."""
        for name in NOT_CHECKOUT_FILTERS:
            if isinstance(data, dict) and data.get(name) is not None:
                raise ValueError(not_a_checkout_filter(name))
        return data


#: Names an agent may send to ``POST /checkout`` meaning "this order's item" (in the body
#: or, as upstream agents send filters, the query string): refused, never ignored.
NOT_CHECKOUT_FILTERS = ("order_id", "item_id")


def not_a_checkout_filter(name: str) -> str:
    return (
        f"{name} is not a filter of POST /checkout: lease an order's item with"
        " POST /orders/{id}/checkout"
    )


class HeartbeatBody(Body):
    progress: float | None = Field(default=None, ge=0, le=1)
    checkpoint: dict[str, Any] | None = None


class SubmitBody(Body):
    result: dict[str, Any]
    evidence: Any = None
    notes: str | None = None


class PartBody(Body):
    part_key: str = Field(min_length=1, max_length=191)
    seq: int | None = Field(default=None, ge=0, le=SEQ_MAX)
    payload: dict[str, Any]
    evidence: Any = None
    notes: str | None = None


class FinalizeBody(Body):
    mode: Literal["strict", "best_effort"] = "strict"


class ErrorInfo(Body):
    code: str = Field(min_length=1, max_length=NAME_MAX)
    message: str


class FailBody(Body):
    error: ErrorInfo
    retryable: bool = True


class RejectError(Body):
    code: str = Field(min_length=1, max_length=NAME_MAX)
    message: str
    field: str | None = None


class RejectBody(Body):
    errors: list[RejectError] = Field(min_length=1)
    allow_rework: bool = False


class ForgetBody(Body):
    """Whose id to erase: exactly one of ``agent_id`` and ``user_id``. An erasure cannot
    be undone, so a field it does not know (``dryRun`` for ``dry_run``) is a 422, not
    ignored."""

    model_config = ConfigDict(strict=True, extra="forbid")
    null_is_default: ClassVar[bool] = False  # ``"dry_run": null`` is no "erase now"

    agent_id: str | None = Field(default=None, min_length=1, max_length=191)
    user_id: str | None = Field(default=None, min_length=1, max_length=191)
    dry_run: bool = False


@functools.cache
def _object_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` that hold a JSON object (``dict``, optional or not)."""
    return tuple(
        name
        for name, field in model.model_fields.items()
        if dict
        in (
            typing.get_origin(field.annotation),
            *map(typing.get_origin, typing.get_args(field.annotation)),
        )
    )


@functools.cache
def _defaulted_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` that are optional with a default other than ``None``."""
    if not getattr(model, "null_is_default", False):
        return ()
    return tuple(
        name
        for name, field in model.model_fields.items()
        if not field.is_required() and field.default is not None
    )
