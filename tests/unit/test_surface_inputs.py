"""Rules the HTTP route declared and the other callers skipped, now held in one place:
an approve's ``wait`` (MCP clamped 999 to 60 and took -1 as 0), and the consumer agent's
identity (300 characters were accepted at start-up, then every item failed on its first
provenance write, its message lost)."""

from __future__ import annotations

import math

import pytest

from workers.identity import checked_identity
from workmanager.errors import ConfigurationError, InvalidQuery
from workmanager.services.inputs import MAX_WAIT_SECONDS, checked_wait
from workmanager.types import AgentInfo


@pytest.mark.parametrize("wait", [999, -1, 1e308, math.nan, "10", True])
def test_an_approve_wait_out_of_range_is_refused(wait: object) -> None:
    with pytest.raises(InvalidQuery) as refused:
        checked_wait(wait)
    assert refused.value.details == [{"path": "wait", "message": "0 to 60 seconds"}]


@pytest.mark.parametrize("wait", [None, 0, 0.5, MAX_WAIT_SECONDS])
def test_an_approve_wait_in_range_is_taken(wait: float | None) -> None:
    assert checked_wait(wait) == wait


def test_an_agent_identity_provenance_cannot_store_is_refused_at_start_up() -> None:
    long = AgentInfo(id="L" * 300, name="n", model_name="m" * 192, runtime="celery/x")
    with pytest.raises(ConfigurationError) as refused:
        checked_identity(long)
    assert refused.value.message == (
        "the agent's identity cannot be recorded: --agent-id: 1 to 191 characters of text; "
        "WORK_MANAGER_AGENT_MODEL: 1 to 191 characters"
    )
    checked_identity(AgentInfo(id="agent-1", name="n", model_name="m", runtime="celery/x"))
