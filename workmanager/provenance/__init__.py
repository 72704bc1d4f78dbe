"""Provenance: who (which agent, model, request) did each mutating action (SPEC §4.7)."""

from .base import ProvenanceEnricher
from .default import DefaultEnricher, agent_type_of, anonymize_ip
from .recorder import ProvenanceRecorder, build_enricher

__all__ = [
    "DefaultEnricher",
    "ProvenanceEnricher",
    "ProvenanceRecorder",
    "agent_type_of",
    "anonymize_ip",
    "build_enricher",
]
