"""Upstream's Feature/Http/OrdersIndexQueryBuilderTest replayed against a real server
(tests/compat/conftest.py's): the scenarios of tests/compat/listing_cases.py as
``GET /orders`` query strings.

Two answers differ by design (docs/migrating.md, ``GET /orders``): the page numbers are
under ``meta`` (``{data, meta}``, SPEC §6.1) where upstream has Laravel's paginator keys
at the top level, and an order's ``items`` come with ``include=items`` (each row carries
``items_count``) where upstream preloads them on every row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.conftest import PREFIX
from tests.compat.listing_cases import (
    CASES,
    DEFAULT_ORDER,
    INVALID,
    http_params,
    keys_of,
    resolve,
    seed_many,
    seed_rows,
    verify,
)

pytestmark = pytest.mark.postgres


def orders(upstream: Any, params: dict[str, Any]) -> httpx.Response:
    response: httpx.Response = upstream.client("admin").get(f"{PREFIX}/orders", params=params)
    return response


def test_filters_sorts_includes_and_fields(upstream: Any, api_db_url: str) -> None:
    """Every case of listing_cases.CASES (upstream's scenario named in each)."""
    ids = seed_rows(api_db_url)
    ago = (datetime.now(UTC) - timedelta(days=5)).isoformat(timespec="seconds")
    for case in CASES:
        r = orders(upstream, http_params(resolve(case.query, ids, ago)))
        assert r.status_code == 200, (case.scenario, r.text)
        verify(case, r.json()["data"], ids)


def test_default_rows_and_items(upstream: Any, api_db_url: str) -> None:
    """'preserves default behaviour with items included and default sort': the default
    sort as upstream; the items only when asked for (see the module's docstring)."""
    ids = seed_rows(api_db_url)
    rows = orders(upstream, {}).json()["data"]
    assert keys_of(rows, ids) == DEFAULT_ORDER
    assert all("items" not in r and r["items_count"] >= 1 for r in rows)
    rows = orders(upstream, {"include": "items"}).json()["data"]
    assert all(len(r["items"]) == r["items_count"] for r in rows)


def test_invalid_filter_sort_and_include_are_400(upstream: Any) -> None:
    """'returns 400 for invalid filter field', '... invalid sort field', '... invalid
    include'."""
    for query in INVALID:
        r = orders(upstream, http_params(query))
        assert r.status_code == 400, (query, r.text)
        assert r.json()["error"]["code"] == "invalid_query"


def test_pagination(upstream: Any, api_db_url: str) -> None:
    """'supports pagination with page[size] and page[number]', 'uses default page size
    when not specified' (50), 'enforces maximum limit of 100' (page numbers under
    ``meta`` here)."""
    seed_many(api_db_url, 120)
    body = orders(upstream, {"page[size]": 5, "page[number]": 2}).json()
    assert body["meta"]["per_page"] == 5 and body["meta"]["current_page"] == 2
    assert len(body["data"]) == 5
    assert body["meta"]["total"] == 120 and body["meta"]["last_page"] == 24
    body = orders(upstream, {}).json()
    assert body["meta"]["per_page"] == 50 and len(body["data"]) == 50
    body = orders(upstream, {"page[size]": 200}).json()
    assert body["meta"]["per_page"] == 100 and len(body["data"]) == 100
