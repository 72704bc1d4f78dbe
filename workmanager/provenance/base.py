"""The enricher protocol: turn an agent and an action into a provenance row's fields."""

from __future__ import annotations

from typing import Any, Protocol

from ..types import AgentInfo


class ProvenanceEnricher(Protocol):
    """Builds the columns of one ``work_provenance`` row. Request bodies are never passed."""

    def enrich(self, action: str, agent: AgentInfo) -> dict[str, Any]:
        """Return column values (``agent_id``, ``agent_type``, ``ip_address``, ``extra`` ...)."""
        ...
