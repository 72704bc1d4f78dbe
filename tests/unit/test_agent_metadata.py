"""What a caller says about itself is checked against what provenance can store, the same
on every database: a value too long for its column, or holding a NUL, is 400
``invalid_agent_metadata`` naming the field (PostgreSQL's driver refused it with a 422
"cannot be stored" while SQLite stored it)."""

from __future__ import annotations

import pytest

from workmanager.errors import InvalidAgentMetadata
from workmanager.services.tokens import Principal
from workmanager.surface.callers import AgentMetadata, build_caller

PRINCIPAL = Principal("token-a", None, frozenset({"checkout"}))


def refused_fields(**meta: str) -> list[str]:
    with pytest.raises(InvalidAgentMetadata) as refused:
        build_caller(PRINCIPAL, AgentMetadata(agent_id="a", **meta))
    return [d["field"] for d in refused.value.details]


def test_fields_that_fit_their_columns_pass() -> None:
    caller = build_caller(
        PRINCIPAL,
        AgentMetadata(
            agent_id="a" * 191,
            version="1.0.0-" + "a" * 58,  # 64 characters
            ip_address="f" * 64,
            user_agent="x" * 5000,
        ),
    )
    assert caller.agent.version is not None and len(caller.agent.version) == 64


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ({"version": "1.0.0-" + "a" * 59}, "agent_version"),  # semver, 65 characters
        ({"ip_address": "a" * 65}, "ip_address"),
        ({"name": "n" * 192}, "name"),
        ({"model_name": "m\x00"}, "model_name"),
        ({"runtime": "r\x00x"}, "runtime"),
        ({"user_agent": "curl\x00"}, "user_agent"),
    ],
)
def test_a_field_provenance_cannot_store_is_refused_by_name(
    meta: dict[str, str], field: str
) -> None:
    assert refused_fields(**meta) == [field]
