"""Writes provenance rows inside the caller's transaction."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy.orm import Session

from ..db import pending
from ..db.models import PROVENANCE_TABLE, utcnow
from ..errors import ConfigurationError
from ..importing import import_object
from ..settings import Settings
from ..types import AgentInfo
from .base import ProvenanceEnricher
from .default import DefaultEnricher

log = logging.getLogger("workmanager.provenance")

_TABLE = PROVENANCE_TABLE
#: Every column a provenance row is written with (each row must carry the same keys).
_COLUMNS = frozenset(c.name for c in _TABLE.columns if c.name != "id")


def build_enricher(settings: Settings) -> ProvenanceEnricher:
    if not settings.provenance_enricher:
        return DefaultEnricher(anonymize=settings.provenance_anonymize_ip)
    cls = import_object(settings.provenance_enricher, "WORK_MANAGER_PROVENANCE_ENRICHER")
    enricher: ProvenanceEnricher = cls(anonymize=settings.provenance_anonymize_ip)
    return enricher


class ProvenanceRecorder:
    """Adds one row per mutating agent action, in the same transaction as the action."""

    def __init__(self, enricher: ProvenanceEnricher) -> None:
        self.enricher = enricher

    def record(
        self,
        session: Session,
        action: str,
        agent: AgentInfo | None,
        *,
        order_id: uuid.UUID | None = None,
        item_id: uuid.UUID | None = None,
    ) -> None:
        if agent is None:
            return
        pending.add(session, _TABLE, self.row(action, agent, order_id=order_id, item_id=item_id))

    def row(
        self,
        action: str,
        agent: AgentInfo,
        *,
        order_id: uuid.UUID | None = None,
        item_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        """The column values of one provenance row (every column of the table but ``id``)."""
        fields: dict[str, Any] = self.enricher.enrich(action, agent)
        unknown = set(fields) - _COLUMNS
        if unknown:
            raise ConfigurationError(
                f"provenance enricher returned unknown fields: {', '.join(sorted(unknown))}"
            )
        row = dict.fromkeys(_COLUMNS)
        row.update(fields)
        row.update(order_id=order_id, item_id=item_id, action=action, created_at=utcnow())
        return row
