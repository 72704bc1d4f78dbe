"""Partial submissions: storing parts in their slots and summarising an item's parts."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Container, Iterable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..checks import Evidence, check, check_result, guarded, own_hook
from ..db.models import Item, Part, utcnow
from ..errors import MissingParts, PayloadTooLarge, ValidationFailed
from ..jsonvalues import canonical, json_fields, problems
from ..order_types import OrderType
from ..order_types import Part as PartValue
from ..settings import Settings
from ..types import JSON, NAME_MAX, SEQ_MAX, AgentInfo, ItemView
from .inputs import notes_problem
from .transitions import record_event
from .views import PartOutcome, iso, item_view, part_dict

VALIDATED, REJECTED = "validated", "rejected"


def checksum(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


def is_part_key(key: Any) -> bool:
    """A part key: a string of 1 to :data:`NAME_MAX` characters, not only blanks (the
    rule of a submitted part and of a plan's ``parts_required`` alike)."""
    return isinstance(key, str) and bool(key.strip()) and len(key) <= NAME_MAX


#: What a list of part keys is, wherever one is given (a plan's ``parts_required``, the
#: type's ``required_parts()``).
PART_KEYS_RULE = "distinct part keys (non-blank storable strings)"


def part_keys(value: Any) -> list[str] | None:
    """The part keys ``value`` lists (any iterable of them: a list, a tuple, a
    generator), or None when it is not that: a string (its letters are not keys), a
    dict, something not iterable, a key that cannot be stored or sent, a repeated one."""
    if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
        return None
    try:
        keys = list(value)
    except TypeError:
        return None
    if not all(is_part_key(k) and not problems(k) for k in keys) or len(set(keys)) != len(keys):
        return None
    return keys


def check_part_input(
    settings: Settings,
    part_key: Any,
    payload: Any,
    seq: Any,
    evidence: Any = None,
    notes: Any = None,
) -> None:
    """Shape and size checks that need no database. The size limit
    (``max_part_payload_bytes``) measures what the part stores: its payload, evidence and
    notes, each as canonical JSON, added up."""
    errors = []
    if not is_part_key(part_key):
        errors.append(
            {
                "path": "part_key",
                "message": "must be a non-empty string (≤191 chars)",
                "validator": "type",
            }
        )
    if seq is not None and (
        isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= SEQ_MAX
    ):
        message = f"must be an integer from 0 to {SEQ_MAX}"
        errors.append({"path": "seq", "message": message, "validator": "minimum"})
    if not isinstance(payload, dict):
        errors.append({"path": "payload", "message": "must be an object", "validator": "type"})
    if (wrong := notes_problem(notes)) is not None:
        errors.append(wrong)
    if errors:
        raise ValidationFailed(errors)
    # Before measuring: a lone surrogate cannot be encoded.
    stored = {"payload": payload, "evidence": evidence, "notes": notes}
    json_fields({"part_key": part_key, **stored}, settings.max_json_depth)
    size = sum(len(canonical(value)) for value in stored.values() if value is not None)
    if size > settings.max_part_payload_bytes:
        raise PayloadTooLarge(
            f"part is {size} bytes (payload, evidence and notes); "
            f"the limit is {settings.max_part_payload_bytes}",
            details={"limit": settings.max_part_payload_bytes, "size": size},
        )


def check_room(settings: Settings, count: int) -> None:
    """A new slot is refused when the item already has ``max_parts_per_item`` parts."""
    if count >= settings.max_parts_per_item:
        raise PayloadTooLarge(
            f"item already has {count} parts; the limit is {settings.max_parts_per_item}",
            details={"limit": settings.max_parts_per_item, "parts": count},
        )


def part_fields(
    payload: dict[str, Any],
    evidence: Any,
    notes: str | None,
    agent_id: str,
    errors: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """The columns a stored part gets (bar its slot and id): ``validated``, or
    ``rejected`` with its validation ``errors`` (upstream's ``{"validation": [...]}``)."""
    return {
        "status": VALIDATED if errors is None else REJECTED,
        "payload": payload,
        "evidence": evidence,  # as sent: a list too (upstream's ``nullable|array``)
        "notes": notes,
        "errors": None if errors is None else {"validation": errors},
        "checksum": checksum(payload),
        "submitted_by_agent_id": agent_id,
        "created_at": utcnow(),
    }


def upsert_part(
    session: Session,
    settings: Settings,
    item: Item,
    part_key: str,
    payload: dict[str, Any],
    seq: int | None,
    evidence: Any,
    notes: str | None,
    agent_id: str,
    errors: list[dict[str, Any]] | None = None,
) -> Part:
    """Store a part in its (key, seq) slot, replacing what the slot held
    (:func:`part_fields`)."""
    slot = -1 if seq is None else seq
    part = session.scalar(
        select(Part).where(
            Part.item_id == item.id, Part.part_key == part_key, Part.seq_slot == slot
        )
    )
    if part is None:
        count = (
            session.scalar(select(func.count()).select_from(Part).where(Part.item_id == item.id))
            or 0
        )
        check_room(settings, count)
        part = Part(id=uuid.uuid4(), item_id=item.id, part_key=part_key, seq=seq, seq_slot=slot)
        session.add(part)
    for column, value in part_fields(payload, evidence, notes, agent_id, errors).items():
        setattr(part, column, value)
    session.flush()
    return part


def latest_validated(session: Session, item_id: uuid.UUID) -> dict[str, Part]:
    """The latest validated part per key: highest seq, then most recent."""
    return latest_of(session.scalars(select(Part).where(Part.item_id == item_id)))


def latest_of(parts: Iterable[Part]) -> dict[str, Part]:
    """Of an item's parts, the latest validated one per key: highest seq, then most
    recent."""
    latest: dict[str, Part] = {}
    ranked = sorted(
        (p for p in parts if p.status == VALIDATED),
        key=lambda p: (p.part_key, p.seq_slot, p.created_at),
    )
    for part in ranked:
        latest[part.part_key] = part
    return latest


def parts_state(session: Session, item: Item, written: uuid.UUID) -> dict[str, Any]:
    """The map kept on the item (:func:`summarize`), after the part ``written``."""
    parts = session.scalars(select(Part).where(Part.item_id == item.id))
    return summarize(parts, written)


def summarize(parts: Iterable[Part], written: uuid.UUID) -> dict[str, Any]:
    """The map kept on the item, upstream's shape: part key → the latest part submitted
    under it (validated or rejected) as ``{status, seq, checksum, submitted_at}``; of parts
    stored at the same instant, the one just ``written`` (as ``workmanager_put_part``
    orders them on PostgreSQL)."""
    latest: dict[str, Part] = {}
    for part in sorted(parts, key=lambda p: (p.part_key, p.created_at, p.id == written)):
        latest[part.part_key] = part
    return {
        key: {
            "status": p.status,
            "seq": p.seq,
            "checksum": p.checksum,
            "submitted_at": iso(p.created_at),
        }
        for key, p in sorted(latest.items())
    }


def required_and_missing(
    session: Session, order_type: OrderType, item: Item
) -> tuple[list[str], list[str]]:
    """The keys the type requires, and those with no validated part yet (the siblings of
    ``parts_state`` in answers)."""
    return required_of(order_type, item_view(item), latest_validated(session, item.id))


def required_of(
    order_type: OrderType, view: ItemView, latest: Container[str]
) -> tuple[list[str], list[str]]:
    """The keys the type requires of ``view``, and those ``latest`` (the keys with a
    validated part, or :func:`latest_of`'s map) has no part for."""
    required = required_keys(order_type, view)
    return required, [k for k in required if k not in latest]


def required_keys(order_type: OrderType, view: ItemView) -> list[str]:
    """What the type's ``required_parts`` hook answers, checked: a list (any iterable) of
    part keys. None (a forgotten ``return``) was a 500, and a string was its letters."""
    answer = guarded(lambda: order_type.required_parts(view), "parts", "required_parts()")
    keys = part_keys(answer)
    if keys is None:
        raise ValidationFailed.at(
            "parts",
            f"the order type's required_parts() must return {PART_KEYS_RULE}, got"
            f" {type(answer).__name__} {answer!r:.80}",
            "hook_error",
            "the order type's required_parts() answered something other than part keys",
        )
    return keys


def as_values(latest: Mapping[str, Part]) -> dict[str, PartValue]:
    """The parts per key as the order type's ``assemble`` hook gets them."""
    return {key: PartValue(p.part_key, p.seq, dict(p.payload)) for key, p in latest.items()}


def judge_part(
    order_type: OrderType,
    view: ItemView,
    part_key: str,
    payload: JSON,
    seq: int | None,
    evidence: Any,
) -> ValidationFailed | None:
    """Validate a part (its schema and its evidence's, then the hook): ``None`` when it
    is valid, else the refusal it is stored ``rejected`` with (SPEC §3, §13)."""
    path = f"payload[{part_key}]"
    schema = guarded(lambda: order_type.part_schema(view, part_key), path, "part_schema()")
    proof = Evidence(
        evidence,
        guarded(
            lambda: order_type.part_evidence_schema(view, part_key),
            "evidence",
            "part_evidence_schema()",
        ),
        order_type.requires_evidence,
    )
    try:
        hook = (
            (lambda value: order_type.validate_part(view, part_key, value, seq))
            if own_hook(order_type, "validate_part")
            else None
        )
        check(schema, payload, path, hook, proof, "validate_part()")
    except ValidationFailed as exc:
        return exc
    return None


def rejection_errors(refused: ValidationFailed | None) -> list[dict[str, Any]] | None:
    """The validation errors a rejected part is stored with (``None``: valid)."""
    if refused is None:
        return None
    return refused.details if isinstance(refused.details, list) else [refused.details]


def part_event(
    part_key: str, seq: int | None, checksum_: str, errors: list[dict[str, Any]] | None
) -> tuple[str, dict[str, Any]]:
    """The event a stored part records, and its payload."""
    if errors is not None:
        return "part_rejected", {"part_key": part_key, "seq": seq, "errors": errors}
    return "part_submitted", {"part_key": part_key, "seq": seq, "checksum": checksum_}


def add_part(
    s: Session,
    settings: Settings,
    order_type: OrderType,
    item: Item,
    agent: AgentInfo,
    part_key: str,
    payload: JSON,
    seq: int | None,
    evidence: Any,
    notes: str | None,
) -> PartOutcome:
    """Validate a part (:func:`judge_part`), store it in its slot, refresh the item's
    parts state and record the event. The caller holds the item's lock and checked the
    lease. A rejected part is stored and recorded; the caller commits this and then
    raises its refusal (``PartOutcome.rejected``)."""
    refused = judge_part(order_type, item_view(item), part_key, payload, seq, evidence)
    errors = rejection_errors(refused)
    part = upsert_part(s, settings, item, part_key, payload, seq, evidence, notes, agent.id, errors)
    item.parts_state = parts_state(s, item, part.id)
    event, event_payload = part_event(part_key, seq, part.checksum, errors)
    record_event(s, item.order_id, event, agent.actor, item_id=item.id, payload=event_payload)
    if refused is not None:
        return PartOutcome(part_dict(part), item.parts_state, rejected=refused)
    required, missing = required_and_missing(s, order_type, item)
    return PartOutcome(part_dict(part), item.parts_state, required, missing)


def assemble(s: Session, order_type: OrderType, item: Item, mode: str) -> tuple[JSON, list[str]]:
    """The result finalize submits (:func:`assemble_parts`)."""
    latest = as_values(latest_validated(s, item.id))
    return assemble_parts(order_type, item_view(item), latest, mode)


def assemble_parts(
    order_type: OrderType, view: ItemView, latest: Mapping[str, PartValue], mode: str
) -> tuple[JSON, list[str]]:
    """The result finalize submits, from the latest validated part per key, and the
    required keys missing (allowed in ``best_effort`` mode when some part exists)."""
    required = required_keys(order_type, view)
    missing = [k for k in required if k not in latest]
    if mode == "strict" and missing:  # best effort with no parts assembles nothing, as upstream
        raise MissingParts(
            f"missing parts: {', '.join(missing) or 'no parts submitted'}",
            details={"missing": missing, "mode": mode},
        )
    values = [value for _, value in sorted(latest.items())]
    result = guarded(lambda: order_type.assemble(view, values), "assembled_result", "assemble()")
    if not isinstance(result, dict):  # the type's own output: its hook_error, not the caller's
        said = f"assemble() returned {type(result).__name__}, not an object"
        raise ValidationFailed.at(
            "assembled_result", said, "hook_error", f"the order type's {said}"
        )
    found = problems(result, "assembled_result")  # the type's own output: its hook_error
    if found:
        raise ValidationFailed(
            [{**p, "validator": "hook_error"} for p in found],
            "the order type's assemble() returned a value that cannot be stored",
        )
    if not required:  # no parts asked for: the item's whole result, as a submit's
        check_result(order_type, view, result, "assembled_result")
    if own_hook(order_type, "validate_assembled"):
        hook = lambda value: order_type.validate_assembled(view, value)  # noqa: E731
        check(None, result, "assembled_result", hook, hook_name="validate_assembled()")
    return result, missing
