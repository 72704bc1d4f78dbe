"""The hot paths' provenance parameters: built once per agent identity and action with
the default enricher, always with a fresh ``created_at``, never shared across what makes
a row differ."""

from __future__ import annotations

import time
from types import SimpleNamespace

from workmanager.db.postgres.values import provenance_params
from workmanager.provenance import DefaultEnricher
from workmanager.provenance.recorder import ProvenanceRecorder
from workmanager.types import AgentInfo


def ctx(enricher: object) -> SimpleNamespace:
    return SimpleNamespace(provenance=ProvenanceRecorder(enricher))  # type: ignore[arg-type]


def built(c: SimpleNamespace, action: str, agent: AgentInfo) -> dict[str, object]:
    """What the recorder itself makes of it (no reuse), as parameters."""
    from workmanager.db.postgres.sql import PROVENANCE

    return PROVENANCE.params(c.provenance.row(action, agent))


def without_time(params: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in params.items() if k != "p_created_at"}


def test_a_reused_row_is_the_row_the_recorder_builds_with_a_fresh_created_at() -> None:
    c = ctx(DefaultEnricher())
    agent = AgentInfo(id="research-agent-42", name="r", version="1.0.0", model_name="m")
    first = provenance_params(c, "checkout", agent)
    time.sleep(0.002)
    second = provenance_params(c, "checkout", AgentInfo(**vars(agent)))
    assert without_time(first) == without_time(second) == without_time(built(c, "checkout", agent))
    assert second["p_created_at"] > first["p_created_at"]  # type: ignore[operator]
    second["p_agent_id"] = "changed"  # a caller's copy: the next one is untouched
    assert provenance_params(c, "checkout", agent)["p_agent_id"] == "research-agent-42"


def test_what_makes_rows_differ_is_never_shared() -> None:
    plain, anonymising = ctx(DefaultEnricher()), ctx(DefaultEnricher(anonymize=True))
    agent = AgentInfo(id="a-1", ip_address="10.1.2.3")
    assert provenance_params(plain, "submit", agent)["p_ip_address"] == "10.1.2.3"
    assert provenance_params(anonymising, "submit", agent)["p_ip_address"] == "10.1.2.0"
    assert provenance_params(plain, "checkout", agent)["p_action"] == "checkout"
    other = AgentInfo(id="a-1", ip_address="10.1.2.3", request_id="r-2")
    assert provenance_params(plain, "submit", other)["p_request_id"] == "r-2"
    assert (
        provenance_params(plain, "submit", other)["p_request_fingerprint"]
        == built(plain, "submit", other)["p_request_fingerprint"]
    )


class Stamping(DefaultEnricher):
    """A custom enricher may add anything (here, a counter): never reused."""

    calls = 0

    def extra(self, action: str, agent: AgentInfo) -> dict[str, object]:
        Stamping.calls += 1
        return {"call": Stamping.calls}


def test_custom_enrichers_and_extra_fields_are_built_every_time() -> None:
    c = ctx(Stamping())
    agent = AgentInfo(id="a-2")
    first, second = (
        provenance_params(c, "heartbeat", agent),
        provenance_params(c, "heartbeat", agent),
    )
    assert first["p_extra"] != second["p_extra"]
    plain = ctx(DefaultEnricher())
    with_extra = AgentInfo(id="a-3", extra={"k": 1})
    assert provenance_params(plain, "submit", with_extra)["p_extra"].obj == {"k": 1}  # type: ignore[union-attr]


def test_addresses_are_anonymised_to_their_network() -> None:
    """SPEC §4.7: the last IPv4 octet zeroed, an IPv6 address kept to its /64 (a mutation
    pass: storing IPv6 addresses whole went unnoticed, the tests knew only IPv4)."""
    from workmanager.provenance.default import anonymize_ip

    assert anonymize_ip("10.1.2.3") == "10.1.2.0"
    assert anonymize_ip("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::"
    assert anonymize_ip("::ffff:10.1.2.3") == "10.1.2.0"  # mapped: the IPv4 it is
    assert anonymize_ip("not an address") is None and anonymize_ip(None) is None


def test_a_parts_checksum_is_the_sha256_of_its_canonical_json() -> None:
    """SPEC §3: an agent can check a part's checksum itself (a mutation pass: salting it
    went unnoticed, the tests compared it only with the function's own output)."""
    import hashlib

    from workmanager.services.parts import checksum

    expected = hashlib.sha256('{"a":[1,2.5],"b":"ü"}'.encode()).hexdigest()
    assert checksum({"b": "ü", "a": [1, 2.5]}) == expected
