"""The default enricher: derives agent type, fingerprints the request, anonymises the IP."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Any

from ..types import AgentInfo

_TRAILING_NUMBER = re.compile(r"[-_.]?\d+$")


def agent_type_of(agent_id: str | None) -> str | None:
    """``research-agent-42`` → ``research-agent``; an id without a number is its own type."""
    if not agent_id:
        return None
    stripped = _TRAILING_NUMBER.sub("", agent_id)
    return stripped or agent_id


def anonymize_ip(ip: str | None) -> str | None:
    """Zero the last IPv4 octet, or keep only the /64 of an IPv6 address; an IPv4 address
    mapped into IPv6 (``::ffff:10.1.2.3``, a dual-stack listener's) as the IPv4 it is (its
    /64 was ``::``, nothing of it kept)."""
    if not ip:
        return None
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


class DefaultEnricher:
    """Subclass and override :meth:`extra` (or :meth:`enrich`) to add your own fields."""

    def __init__(self, anonymize: bool = False) -> None:
        self.anonymize = anonymize

    def fingerprint(self, action: str, agent: AgentInfo) -> str:
        parts = [
            action,
            agent.id,
            agent.name or "",
            agent.version or "",
            agent.model_name or "",
            agent.runtime or "",
            agent.user_agent or "",
        ]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def extra(self, action: str, agent: AgentInfo) -> dict[str, Any]:
        return dict(agent.extra)

    def enrich(self, action: str, agent: AgentInfo) -> dict[str, Any]:
        ip = anonymize_ip(agent.ip_address) if self.anonymize else agent.ip_address
        return {
            "agent_id": agent.id,
            "agent_name": agent.name,
            "agent_version": agent.version,
            "agent_type": agent_type_of(agent.id),
            "model_name": agent.model_name,
            "runtime": agent.runtime,
            "request_id": agent.request_id,
            "request_fingerprint": self.fingerprint(action, agent),
            "ip_address": ip,
            "user_agent": agent.user_agent,
            "principal": agent.principal,
            "idempotency_key_hash": agent.idempotency_key_hash,
            "extra": self.extra(action, agent) or None,
        }
