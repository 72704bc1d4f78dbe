"""Reading a list filter's instant (``filter[created_at]=>=…``): every ISO 8601 spelling
of one instant is that instant; a value that is none says why in its 400."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from workmanager.errors import InvalidQuery
from workmanager.reads.params import as_datetime, as_int, operator_of

INSTANT = datetime(2026, 12, 7, 4, 21, 46, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    [
        "2026-12-07T04:21:46Z",
        "2026-12-07T04:21:46z",  # RFC 3339 allows a lowercase z (it was a 400)
        "2026-12-07t04:21:46z",
        "2026-12-07T04:21:46+00:00",
        "2026-12-07T09:51:46+05:30",
        "2026-12-06T16:21:46-12:00",
        "2026-12-07T04:21:46",  # no zone: UTC
    ],
)
def test_every_spelling_of_an_instant_is_that_instant(raw: str) -> None:
    assert as_datetime(raw) == INSTANT
    assert operator_of(f">={raw}", "filter[created_at]", as_datetime) == (">=", INSTANT)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("9999-12-31T23:59:59-12:00", "outside the years 1 to 9999 once in UTC"),
        ("0001-01-01T00:00:00+05:30", "outside the years 1 to 9999 once in UTC"),
        ("2026-02-30", "not an ISO 8601 date or instant"),
        ("yesterday", "not an ISO 8601 date or instant"),
    ],
)
def test_a_value_that_is_no_instant_says_why(raw: str, why: str) -> None:
    with pytest.raises(InvalidQuery) as info:
        operator_of(raw, "filter[created_at]", as_datetime)
    assert info.value.message.startswith(f"filter[created_at]: cannot read {raw!r}: {why}")


@pytest.mark.parametrize(("raw", "number"), [("0", 1), ("-5", 1), ("3", 3)])
def test_a_page_number_below_one_is_the_first_page(raw: str, number: int) -> None:
    """A mutation pass: a page number below 1 (a negative offset for the database) went
    unchecked by any test."""
    from workmanager.reads.params import ListQuery, page

    query = ListQuery(size=10)
    assert page(query, "page[number]", raw, 100)
    assert query.number == number


@pytest.mark.parametrize("raw", ["2147483648", "-2147483648", "99999999999"])
def test_an_integer_past_the_columns_range_is_a_400(raw: str) -> None:
    """A mutation pass: ``priority>99999999999`` reached the integer column unchecked."""
    with pytest.raises(InvalidQuery):
        operator_of(f">{raw}", "filter[priority]", as_int)
