"""The JSON shapes the adapters answer with (SPEC §6 table), shared by HTTP and MCP."""

from __future__ import annotations

from typing import Any

from ..services.views import ItemOutcome, PartOutcome, iso
from ..types import Lease


def lease_dict(lease: Lease) -> dict[str, Any]:
    """The checkout answer: the item, its lease token and when to heartbeat."""
    item = lease.item
    return {
        "id": str(lease.item_id),
        "order_id": str(lease.order_id),
        "type": item.type if item else None,
        "input": item.input if item else None,
        "lease_token": lease.token,
        "lease_expires_at": iso(lease.expires_at),
        "heartbeat_every_seconds": lease.heartbeat_every_seconds,
        "max_attempts": item.max_attempts if item else None,
        "current_attempt": item.attempts if item else None,
    }


def heartbeat_dict(lease: Lease) -> dict[str, Any]:
    return {
        "lease_expires_at": iso(lease.expires_at),
        "heartbeat_every_seconds": lease.heartbeat_every_seconds,
    }


def part_answer(outcome: PartOutcome) -> dict[str, Any]:
    part = outcome.part
    return {
        "success": True,
        "part": {k: part[k] for k in ("id", "part_key", "seq", "status")},
        "item_parts_state": outcome.parts_state,
        "required_parts": outcome.required,
        "missing_parts": outcome.missing,
    }


def submit_answer(outcome: ItemOutcome) -> dict[str, Any]:
    """The item submitted, its state and its order's (upstream's ``order_state``)."""
    item = outcome.item
    return {"item": item, "state": item["state"], "order_state": outcome.order_state}


def finalize_answer(outcome: ItemOutcome) -> dict[str, Any]:
    item = outcome.item
    return {
        "success": True,
        "item": {k: item[k] for k in ("id", "state", "assembled_result")},
        "order_state": outcome.order_state,
    }
