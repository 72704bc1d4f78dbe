"""What a lease keeps once built (its token's parse, its holder, its own agent) and what
overrides it: a lease acted on without its token compares the holder the row recorded."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from workmanager.db.models import Item
from workmanager.errors import LeaseConflict
from workmanager.lease_tokens import MALFORMED_FENCE, NO_TOKEN_FENCE, Holder
from workmanager.leases.base import check_row
from workmanager.services.inputs import agent_of
from workmanager.surface.operations import CurrentLease
from workmanager.types import AgentInfo, Lease

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def lease(**overrides: object) -> Lease:
    fields: dict[str, object] = {
        "item_id": uuid.uuid4(),
        "order_id": uuid.uuid4(),
        "agent_id": "agent-1",
        "token": "7.s3cret",
        "expires_at": NOW,
        "heartbeat_every_seconds": 30,
    }
    return Lease(**(fields | overrides))  # type: ignore[arg-type]


def test_a_renewed_lease_keeps_its_holder_and_agent() -> None:
    first = lease()
    holder, agent = first.holder, first.agent
    assert holder.agent_id == "agent-1" and holder.fence == 7
    assert agent == AgentInfo(id="agent-1")
    renewed = first.renewed(NOW + timedelta(seconds=30))
    assert renewed.holder is holder and renewed.agent is agent
    assert renewed.expires_at == NOW + timedelta(seconds=30)
    copied = pickle.loads(pickle.dumps(renewed))
    assert copied.holder == holder and copied.agent == agent


def test_a_call_that_names_no_agent_acts_as_the_leases_holder() -> None:
    held = lease()
    assert agent_of(None, held) is held.agent
    named = AgentInfo(id="agent-2", model_name="m")
    assert agent_of(named, held) is named  # a named agent is used as given
    assert agent_of("agent-3", held) == AgentInfo(id="agent-3")


def test_a_lease_without_its_token_compares_the_rows_holder() -> None:
    proof = Holder("agent-1", 12, "hash")
    current = CurrentLease(uuid.uuid4(), uuid.uuid4(), "agent-1", "", NOW, 30, proof=proof)
    assert current.holder is proof  # not the cached holder parsed from an empty token
    assert current.renewed(NOW).holder is proof
    unheld = CurrentLease(uuid.uuid4(), uuid.uuid4(), "agent-1", "", NOW, 30)
    assert unheld.holder == Holder("agent-1", NO_TOKEN_FENCE, None)  # every check refuses it


def test_a_lease_token_has_one_spelling() -> None:
    """``<fence>.<secret>`` with the fence as checkout wrote it: leading zeros, signs,
    spaces or non-ASCII digits are malformed (refused as a conflict that says so)."""
    from workmanager.lease_tokens import parse

    fence, secret = parse("12.s3cret")
    assert fence == 12 and secret is not None
    assert parse("0.s3cret")[0] == 0
    arabic_one = "\u0661"
    malformed_tokens = ("012.s3cret", "00.s3cret", "+1.s3cret", " 1.s3cret", "1.", "1")
    for malformed in (*malformed_tokens, f"{arabic_one}.s3cret"):
        assert parse(malformed) == (MALFORMED_FENCE, None), malformed


def test_a_malformed_token_is_refused_as_malformed() -> None:
    """It was told "no lease token was sent", the answer for a request without one."""
    item = Item(id=uuid.uuid4(), state="leased", leased_by_agent_id="agent-1", lease_token=3)
    item.lease_expires_at = NOW + timedelta(seconds=30)
    with pytest.raises(LeaseConflict, match="the lease token is malformed"):
        check_row(item, Holder("agent-1", MALFORMED_FENCE, None), NOW)
    with pytest.raises(LeaseConflict, match="no lease token was sent"):
        check_row(item, Holder("agent-1", NO_TOKEN_FENCE, None), NOW)
