"""Partial submissions: storing parts in their slots and summarising an item's parts."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..checks import Evidence, check, guarded
from ..db.models import Item, Part, utcnow
from ..errors import MissingParts, PayloadTooLarge, ValidationFailed
from ..jsonvalues import json_value
from ..order_types import OrderType
from ..order_types import Part as PartValue
from ..settings import Settings
from ..types import JSON, AgentInfo
from .outcomes import PartOutcome
from .transitions import record_event
from .views import iso, item_view, part_dict

VALIDATED, REJECTED = "validated", "rejected"


def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8; what checksums and limits measure."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def checksum(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


def check_part_input(settings: Settings, part_key: Any, payload: Any, seq: Any) -> None:
    """Shape and size checks that need no database."""
    errors = []
    if not isinstance(part_key, str) or not part_key.strip() or len(part_key) > 191:
        errors.append(
            {
                "path": "part_key",
                "message": "must be a non-empty string (≤191 chars)",
                "validator": "type",
            }
        )
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        errors.append({"path": "seq", "message": "must be an integer ≥ 0", "validator": "minimum"})
    if not isinstance(payload, dict):
        errors.append({"path": "payload", "message": "must be an object", "validator": "type"})
    if errors:
        raise ValidationFailed(errors)
    json_value({"payload": payload}, "$")  # before measuring: a lone surrogate cannot be encoded
    size = len(canonical(payload))
    if size > settings.max_part_payload_bytes:
        raise PayloadTooLarge(
            f"part payload is {size} bytes; the limit is {settings.max_part_payload_bytes}",
            details={"limit": settings.max_part_payload_bytes, "size": size},
        )


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
    """Store a part in its (key, seq) slot, replacing what the slot held: validated, or
    ``rejected`` with its validation ``errors`` (upstream's ``{"validation": [...]}``)."""
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
        if count >= settings.max_parts_per_item:
            raise PayloadTooLarge(
                f"item already has {count} parts; the limit is {settings.max_parts_per_item}",
                details={"limit": settings.max_parts_per_item, "parts": count},
            )
        part = Part(id=uuid.uuid4(), item_id=item.id, part_key=part_key, seq=seq, seq_slot=slot)
        session.add(part)
    part.status = VALIDATED if errors is None else REJECTED
    part.payload = payload
    part.evidence = (
        evidence if isinstance(evidence, dict) or evidence is None else {"value": evidence}
    )
    part.notes = notes
    part.errors = None if errors is None else {"validation": errors}
    part.checksum = checksum(payload)
    part.submitted_by_agent_id = agent_id
    part.created_at = utcnow()
    session.flush()
    return part


def latest_validated(session: Session, item_id: uuid.UUID) -> dict[str, Part]:
    """The latest validated part per key: highest seq, then most recent."""
    parts = session.scalars(
        select(Part)
        .where(Part.item_id == item_id, Part.status == VALIDATED)
        .order_by(Part.part_key, Part.seq_slot, Part.created_at)
    )
    latest: dict[str, Part] = {}
    for part in parts:
        latest[part.part_key] = part
    return latest


def parts_state(session: Session, item: Item) -> dict[str, Any]:
    """The map kept on the item, upstream's shape: part key → the latest part submitted
    under it (validated or rejected) as ``{status, seq, checksum, submitted_at}``."""
    parts = session.scalars(
        select(Part).where(Part.item_id == item.id).order_by(Part.part_key, Part.created_at)
    )
    latest: dict[str, Part] = {}
    for part in parts:
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
    required = list(guarded(lambda: order_type.required_parts(item_view(item)), "parts"))
    latest = latest_validated(session, item.id)
    return required, [k for k in required if k not in latest]


def as_values(latest: dict[str, Part]) -> list[PartValue]:
    return [PartValue(p.part_key, p.seq, dict(p.payload)) for _, p in sorted(latest.items())]


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
    """Validate a part (its schema and its evidence's, then the hook), store it in its
    slot, refresh the item's parts state and record the event. The caller holds the
    item's lock and checked the lease."""
    view = item_view(item)
    path = f"payload[{part_key}]"
    schema = guarded(lambda: order_type.part_schema(view, part_key), path)
    proof = Evidence(
        evidence,
        guarded(lambda: order_type.part_evidence_schema(view, part_key), "evidence"),
        order_type.requires_evidence,
    )
    try:
        check(
            schema,
            payload,
            path,
            lambda: order_type.validate_part(view, part_key, payload, seq),
            proof,
        )
    except ValidationFailed as exc:
        # Stored ``rejected`` with its errors (SPEC §3, §13) and recorded; the caller
        # commits this and then raises ``exc`` (PartOutcome.rejected).
        errors = exc.details if isinstance(exc.details, list) else [exc.details]
        part = upsert_part(
            s, settings, item, part_key, payload, seq, evidence, notes, agent.id, errors
        )
        item.parts_state = parts_state(s, item)
        record_event(
            s,
            item.order_id,
            "part_rejected",
            agent.actor,
            item_id=item.id,
            payload={"part_key": part_key, "seq": seq, "errors": errors},
        )
        return PartOutcome(part_dict(part), item.parts_state, rejected=exc)
    part = upsert_part(s, settings, item, part_key, payload, seq, evidence, notes, agent.id)
    item.parts_state = parts_state(s, item)
    record_event(
        s,
        item.order_id,
        "part_submitted",
        agent.actor,
        item_id=item.id,
        payload={"part_key": part_key, "seq": seq, "checksum": part.checksum},
    )
    required, missing = required_and_missing(s, order_type, item)
    return PartOutcome(part_dict(part), item.parts_state, required, missing)


def assemble(s: Session, order_type: OrderType, item: Item, mode: str) -> tuple[JSON, list[str]]:
    """The result finalize submits, from the latest validated part per key, and the
    required keys missing (allowed in ``best_effort`` mode when some part exists)."""
    view = item_view(item)
    latest = latest_validated(s, item.id)
    required = guarded(lambda: order_type.required_parts(view), "parts")
    missing = [k for k in required if k not in latest]
    if mode == "strict" and missing:  # best effort with no parts assembles nothing, as upstream
        raise MissingParts(
            f"missing parts: {', '.join(missing) or 'no parts submitted'}",
            details={"missing": missing, "mode": mode},
        )
    result = guarded(lambda: order_type.assemble(view, as_values(latest)), "assembled_result")
    if not isinstance(result, dict):
        raise ValidationFailed(
            [{"path": "assembled_result", "message": "must be an object", "validator": "type"}]
        )
    check(None, result, "assembled_result", lambda: order_type.validate_assembled(view, result))
    return result, missing
