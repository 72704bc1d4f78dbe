"""Backoffs double per attempt and stop at ten years: a high ``max_attempts`` (or apply
retries) doubled past what a float and a date hold, and the retry raised OverflowError."""

from __future__ import annotations

from workmanager.services.transitions import backoff, doubled
from workmanager.settings import Settings
from workmanager.settings_values import MAX_DURATION_SECONDS


def test_the_backoff_doubles_then_stops_at_its_ceiling() -> None:
    settings = Settings(database_url="sqlite://", retry_backoff_seconds=60, retry_jitter_seconds=0)
    assert [backoff(settings, n) for n in (1, 2, 3)] == [60.0, 120.0, 240.0]
    assert doubled(10, 0) == 10.0  # the first attempt waits the base
    for attempt in (60, 1100, 10**6):  # 2.0**1100 alone overflows a float
        assert backoff(settings, attempt) == MAX_DURATION_SECONDS
        assert doubled(10, attempt) == MAX_DURATION_SECONDS
