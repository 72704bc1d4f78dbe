"""Lists refuse what no database can run, on both databases alike (a data-extremes pass):
a filter of 66,000 values was ``internal_error`` on PostgreSQL (65,535 bound parameters a
statement at most), 2,000 sort terms a 500 on SQLite ("too many terms in ORDER BY")."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import DATABASES
from tests.support.types import Simple
from workmanager import Registry
from workmanager.errors import InvalidQuery
from workmanager.reads.item_listing import ItemListing
from workmanager.reads.listing import OrderListing
from workmanager.reads.params import MAX_LIST_VALUES


@pytest.mark.parametrize("db", DATABASES)
def test_a_sort_of_as_many_terms_as_taken_runs_on_both_databases(make_wm: Any, db: str) -> None:
    """999 terms (SQLite takes at most 1,999 in an ORDER BY): run, the first term deciding."""
    wm = make_wm(db=db, registry=Registry([Simple()]))
    low, high = wm.propose("test.simple", {}, priority=1), wm.propose("test.simple", {}, priority=9)
    for listing in (OrderListing(wm.ctx), ItemListing(wm.ctx)):
        terms = ",".join(["-priority", "priority", "-created_at"] * 333)  # 999 terms
        page = listing.list([("sort", terms)])
        orders = [row.get("order_id", row["id"]) for row in page["data"]]
        assert orders == [str(high), str(low)], page["data"]


@pytest.mark.parametrize("db", DATABASES)
def test_a_filter_of_more_values_than_the_limit_is_an_invalid_query(make_wm: Any, db: str) -> None:
    wm = make_wm(db=db, registry=Registry([Simple()]))
    order = wm.propose("test.simple", {})
    listing = OrderListing(wm.ctx)
    most = ",".join(["test.simple"] + [f"t{i}" for i in range(MAX_LIST_VALUES - 1)])
    assert [row["id"] for row in listing.list([("filter[type]", most)])["data"]] == [str(order)]
    for param in ("filter[type]", "filter[id]", "filter[agent_id]", "sort"):
        with pytest.raises(InvalidQuery) as refused:
            listing.list([(param, ",".join(f"t{i}" for i in range(66_000)))])
        assert refused.value.details == {"parameter": param}
        assert f"at most {MAX_LIST_VALUES}" in refused.value.message
    with pytest.raises(InvalidQuery):
        ItemListing(wm.ctx).list([("filter[agent_id]", "a," * MAX_LIST_VALUES)])


def test_the_items_page_is_never_larger_than_the_max(make_wm: Any) -> None:
    """A configuration pass: the items list (the console's) took the default page size
    over the max one ("no page is ever larger than the max"), as the orders list did not."""
    wm = make_wm(registry=Registry([Simple()]), default_page_size_http=500, max_page_size=1)
    wm.propose("test.simple", {})
    wm.propose("test.simple", {})
    for listing in (OrderListing(wm.ctx), ItemListing(wm.ctx)):
        page = listing.list([])
        assert page["meta"]["per_page"] == 1 and len(page["data"]) == 1, page["meta"]


@pytest.mark.parametrize("db", DATABASES)
def test_a_list_filter_given_twice_is_one_list_and_a_comparison_twice_a_range(
    make_wm: Any, db: str
) -> None:
    """``filter[id]=a&filter[id]=b`` (what an HTTP client sends for a list) found nothing:
    two conditions that no row meets at once. It is one list now; a comparison given twice
    is still a range, and the merged list is held to the values' limit."""
    wm = make_wm(db=db, registry=Registry([Simple()]))
    low, high = wm.propose("test.simple", {}, priority=1), wm.propose("test.simple", {}, priority=9)
    orders, items = OrderListing(wm.ctx), ItemListing(wm.ctx)

    both = orders.list([("filter[id]", str(low)), ("filter[id]", str(high)), ("sort", "priority")])
    assert [row["id"] for row in both["data"]] == [str(low), str(high)]
    listed = items.list([("filter[order_id]", str(low)), ("filter[order_id]", str(high))])
    assert {row["order_id"] for row in listed["data"]} == {str(low), str(high)}
    ranged = orders.list([("filter[priority]", ">=2"), ("filter[priority]", "<=9")])
    assert [row["id"] for row in ranged["data"]] == [str(high)]
    assert items.list([("filter[priority]", ">=2"), ("filter[priority]", "<2")])["data"] == []
    one = orders.list([("page[size]", "5"), ("page[size]", "1")])  # a page's: the last
    assert one["meta"]["per_page"] == 1
    both = orders.list([("filter[items.state]", "queued"), ("filter[items.state]", "leased")])
    assert both["data"] == []  # over the items: each must hold (no order has both)
    resorted = orders.list([("sort", "-created_at"), ("sort", "priority")])  # one sort list
    assert [row["id"] for row in resorted["data"]] == [str(high), str(low)]
    half = ",".join(f"t{i}" for i in range(MAX_LIST_VALUES // 2 + 1))
    with pytest.raises(InvalidQuery, match=f"at most {MAX_LIST_VALUES}"):
        orders.list([("filter[type]", half), ("filter[type]", half)])
