"""A query parameter a route does not take is refused (SPEC §6.1: 400 ``invalid_query``),
as ``GET /orders`` refuses an unknown filter: FastAPI ignores what a route does not
declare, so ``POST /checkout?typ=x`` leased an item of any type and ``approve?wiat=10``
answered at once. One check for every route, from the parameters each declares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request

from ..errors import InvalidQuery
from ..surface.middleware import blank_names

F = TypeVar("F", bound=Callable[..., Any])

#: (names taken, names the endpoint refuses itself) per route id, built on its first
#: request; ``None``: the route reads any query.
_TAKEN: dict[int, tuple[frozenset[str], frozenset[str]] | None] = {}


def reads_any_query(endpoint: F) -> F:
    """Mark an endpoint that reads the query string itself and refuses what it does not
    know (``GET /orders``: its filters, sorts and pages)."""
    endpoint.reads_any_query = True  # type: ignore[attr-defined]
    return endpoint


def also_refuses(*names: str) -> Callable[[F], F]:
    """Mark query names the endpoint refuses itself with a better message than
    "unknown" (``/checkout``'s ``order_id``: not a checkout filter, and why)."""

    def mark(endpoint: F) -> F:
        endpoint.refuses_itself = frozenset(names)  # type: ignore[attr-defined]
        return endpoint

    return mark


def taken(route: Any) -> tuple[frozenset[str], frozenset[str]] | None:
    """The query names ``route`` takes, and those its endpoint refuses itself (``None``:
    it reads any)."""
    key = id(route)
    if key not in _TAKEN:
        endpoint = getattr(route, "endpoint", None)
        dependant = getattr(route, "dependant", None)
        if dependant is None or getattr(endpoint, "reads_any_query", False):
            _TAKEN[key] = None
        else:
            itself = frozenset(getattr(endpoint, "refuses_itself", frozenset()))
            _TAKEN[key] = (frozenset(_query_names(dependant)) - itself, itself)
    return _TAKEN[key]


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a dependant and its sub-dependencies declare."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def known_query(request: Request) -> None:
    """The route dependency: 400 ``invalid_query`` naming the first unknown parameter."""
    blanks = blank_names(request.scope)  # dropped for their empty values, still named
    if not request.query_params and not blanks:
        return  # the usual request: nothing to look at
    found = taken(request.scope.get("route"))
    if found is None:
        return
    names, itself = found
    unknown = sorted({*request.query_params, *blanks} - names - itself)
    if unknown:
        takes = f"takes {', '.join(sorted(names))}" if names else "takes no query parameters"
        raise InvalidQuery(
            f"unknown query parameter {unknown[0]!r}; this route {takes}",
            details={"parameter": unknown[0]},
        )
