"""Writes provenance rows inside the caller's transaction."""

from __future__ import annotations

import json
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


_VARIABLE = "WORK_MANAGER_PROVENANCE_ENRICHER"
_FORM = "pkg.mod:Class, constructed with anonymize=<bool>, whose instances have enrich()"


def build_enricher(settings: Settings) -> ProvenanceEnricher:
    """The configured enricher; one that cannot be built (not a class, no ``anonymize``
    parameter, no ``enrich`` method) is a :class:`ConfigurationError` naming the variable,
    at start-up rather than at the first provenance row."""
    if not settings.provenance_enricher:
        return DefaultEnricher(anonymize=settings.provenance_anonymize_ip)
    reference = settings.provenance_enricher
    cls = import_object(reference, _VARIABLE)
    try:
        enricher: ProvenanceEnricher = cls(anonymize=settings.provenance_anonymize_ip)
    except TypeError as exc:
        raise ConfigurationError(
            f"{_VARIABLE}: cannot build {reference!r}: {exc}", hint=f"expected {_FORM}"
        ) from exc
    if not callable(getattr(enricher, "enrich", None)):
        raise ConfigurationError(
            f"{_VARIABLE}: {reference!r} built a {type(enricher).__name__}, which has no "
            "enrich(action, agent) method",
            hint=f"expected {_FORM}",
        )
    return enricher


class ProvenanceRecorder:
    """Adds one row per mutating agent action, in the same transaction as the action."""

    def __init__(self, enricher: ProvenanceEnricher) -> None:
        self.enricher = enricher
        anonymize = bool(getattr(enricher, "anonymize", False))
        self.fallback = DefaultEnricher(anonymize=anonymize)

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
        """The column values of one provenance row (every column of the table but ``id``).

        What an enricher returns beyond the table's columns (upstream's enrichers add
        keys freely, e.g. ``data["team"] = ...``) goes into ``extra``; a value that is not
        JSON is stored as its text. An enricher that raises or returns something other
        than a dict never fails the action: the row is the default enricher's, with
        ``extra.enricher_error`` naming the exception, and the error is logged."""
        try:
            fields = self.enricher.enrich(action, agent)
            if not isinstance(fields, dict):
                raise TypeError(f"enrich() returned {type(fields).__name__}, not a dict")
        except Exception as exc:
            log.exception("provenance enricher %s failed", type(self.enricher).__name__)
            fields = self.fallback.enrich(action, agent)
            fields["extra"] = {**(fields.get("extra") or {}), "enricher_error": repr(exc)[:500]}
        fields = dict(fields)
        unknown = {k: fields.pop(k) for k in list(fields) if k not in _COLUMNS}
        if unknown:
            extra = fields.get("extra")
            merged = dict(extra) if isinstance(extra, dict) else {}
            if extra is not None and not isinstance(extra, dict):
                merged["extra"] = extra
            merged.update({str(k): v for k, v in unknown.items()})
            fields["extra"] = merged
        if fields.get("extra") is not None:
            fields["extra"] = json.loads(json.dumps(fields["extra"], default=str))
        row = dict.fromkeys(_COLUMNS)
        row.update(fields)
        row.update(order_id=order_id, item_id=item_id, action=action, created_at=utcnow())
        return row
