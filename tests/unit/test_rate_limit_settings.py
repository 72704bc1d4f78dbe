"""The rate limit settings (SPEC §13): ``<count>/<s|m|h>``, the burst, and which buckets
a call takes from (``ratelimit.rules``: the one place)."""

from __future__ import annotations

import pytest

from workmanager.errors import ConfigurationError
from workmanager.ratelimit import rules
from workmanager.ratelimit.base import Bucket
from workmanager.ratelimit.rate import Rate
from workmanager.settings import Settings

P = "WORK_MANAGER_RATE_LIMIT_"


def test_unset_means_no_limit() -> None:
    s = Settings.from_env({})
    assert (s.rate_limit_checkout_per_agent, s.rate_limit_burst) == (None, None)
    assert not rules.limited(s, rules.CHECKOUT) and not rules.limited(s, rules.REQUESTS)
    assert rules.buckets(s, rules.CHECKOUT, "a", "t") == ()


@pytest.mark.parametrize(
    ("text", "rate"), [("20/s", Rate(20, 1)), ("600/m", Rate(600, 60)), (" 5 / H ", Rate(5, 3600))]
)
def test_rates_parse(text: str, rate: Rate) -> None:
    s = Settings.from_env({P + "CHECKOUT_PER_TENANT": text, P + "REQUESTS_PER_AGENT": text})
    assert s.rate_limit_checkout_per_tenant == rate == s.rate_limit_requests_per_agent


@pytest.mark.parametrize("text", ["20", "20/d", "0/s", "-1/s", "x/s", "20/", "/s", "2.5/s"])
def test_bad_rates_name_the_variable_and_the_form(text: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        Settings.from_env({P + "CHECKOUT_PER_AGENT": text})
    assert P + "CHECKOUT_PER_AGENT" in str(exc.value)
    assert "<count>/<s|m|h>" in str(exc.value)


def test_bad_burst_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match=P + "BURST"):
        Settings.from_env({P + "BURST": "0"})


def test_burst_is_the_capacity_else_the_count() -> None:
    s = Settings(
        rate_limit_checkout_per_agent=Rate(20, 1), rate_limit_requests_per_tenant=Rate(120, 60)
    )
    assert rules.buckets(s, rules.CHECKOUT, "a", "t") == (Bucket("checkout@20/20:agent:a", 20, 20),)
    assert rules.buckets(s, rules.REQUESTS, "a", "t") == (
        Bucket("requests@120/2:tenant:t", 120, 2),
    )
    burst = s.replace(rate_limit_burst=5)
    assert rules.buckets(burst, rules.CHECKOUT, "a", None)[0].capacity == 5


def test_checkout_tenant_looks_the_item_up_only_when_needed() -> None:
    looked: list[int] = []

    def lookup() -> str:
        looked.append(1)
        return "t-item"

    agent_only = Settings(rate_limit_checkout_per_agent=Rate(1, 1))
    per_tenant = Settings(rate_limit_checkout_per_tenant=Rate(1, 1))
    assert rules.checkout_tenant(agent_only, None, lookup) is None
    assert rules.checkout_tenant(per_tenant, "t", lookup) == "t"
    assert looked == []
    assert rules.checkout_tenant(per_tenant, None, lookup) == "t-item"
    assert rules.checkout_tenant(per_tenant, None, None) is None
