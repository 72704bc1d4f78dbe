"""The judge of the rate-limit hammer tests (``tests/support/buckets.py``) on simulated
buckets: a correct bucket passes however slow and uneven the calls are, and a bucket with
the wrong rate or burst fails on calls as fast as an idle machine makes them."""

from __future__ import annotations

import random

import pytest

from tests.support.buckets import Call, assert_within

CAPACITY, RATE = 10, 10.0


def simulate(
    capacity: float, rate: float, latency: tuple[float, float], seconds: float = 1.5, stalls=0.0
) -> list[Call]:
    """Four callers for ``seconds``, each call taking a random time in ``latency`` (and,
    with probability ``stalls``, a whole second); the bucket takes its token at a random
    instant inside the call, in the order of those instants."""
    rng = random.Random(7)
    planned = []
    for _ in range(4):
        t = 0.0
        while t < seconds:
            took = rng.uniform(*latency) + (1.0 if rng.random() < stalls else 0.0)
            planned.append((t + rng.uniform(0, took), t, t + took))
            t += took
    level, last, calls = capacity, 0.0, []
    for instant, start, end in sorted(planned):
        level = min(capacity, level + rate * (instant - last))
        last = instant
        accepted = level >= 1
        if accepted:
            level -= 1
        calls.append(Call(start, end, accepted))
    return calls


@pytest.mark.parametrize(
    ("latency", "stalls"),
    [((0.0005, 0.002), 0.0), ((0.01, 0.3), 0.0), ((0.05, 0.4), 0.05)],
    ids=["idle", "loaded", "stalling"],
)
def test_a_correct_bucket_passes_however_slow_the_calls(latency, stalls) -> None:
    assert_within(simulate(CAPACITY, RATE, latency, stalls=stalls), CAPACITY, RATE)


@pytest.mark.parametrize(
    ("capacity", "rate"),
    [(CAPACITY, 2 * RATE), (CAPACITY, RATE / 2), (2 * CAPACITY, RATE), (1, RATE)],
    ids=["rate-doubled", "rate-halved", "burst-doubled", "no-burst"],
)
def test_a_wrong_bucket_fails(capacity, rate) -> None:
    calls = simulate(capacity, rate, (0.0005, 0.002))
    with pytest.raises(AssertionError):
        assert_within(calls, CAPACITY, RATE)


def test_a_bucket_never_emptied_fails() -> None:
    calls = simulate(100_000, RATE, (0.0005, 0.002))
    with pytest.raises(AssertionError, match="never emptied"):
        assert_within(calls, CAPACITY, RATE)


#: The hammer tests' bucket (tests/integration/test_rate_limits.py, tests/api/test_rate_limits.py).
HAMMERED = 20


@pytest.mark.parametrize(
    ("capacity", "rate", "wrong"),
    [
        (HAMMERED, HAMMERED, False),
        (HAMMERED, 1.1 * HAMMERED, True),
        (HAMMERED, 0.9 * HAMMERED, True),
        (1.1 * HAMMERED, HAMMERED, True),
        (0.9 * HAMMERED, HAMMERED, True),
    ],
    ids=["right", "rate-10%-over", "rate-10%-under", "burst-10%-over", "burst-10%-under"],
)
def test_at_the_hammer_tests_bucket_10_percent_off_fails(capacity, rate, wrong) -> None:
    """The issue's "rate and burst within 10 %": at 20/s, burst 20, on calls as fast as an
    idle machine makes them, a bucket 10 % off either way in rate or burst fails (with 10/s,
    burst 10, a bucket 10 % short is within one token of the bounds and passes)."""
    calls = simulate(capacity, rate, (0.0005, 0.002))
    if wrong:
        with pytest.raises(AssertionError):
            assert_within(calls, HAMMERED, HAMMERED)
    else:
        assert_within(calls, HAMMERED, HAMMERED)
