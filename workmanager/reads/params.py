"""The list endpoints' query-string language, shared by the orders and items lists:
``filter[name]=value`` (comma lists, ``>=``/``<=``/``<>``… comparisons), ``sort`` (``-`` for
descending), ``page[number]``/``page[size]`` (and upstream's ``page``, ``per_page``,
``limit``), and the page's ``{data, meta}`` envelope. Anything unreadable is
:class:`~workmanager.errors.InvalidQuery` naming the parameter.
"""

from __future__ import annotations

import operator
import re
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement

from ..errors import InvalidQuery

_OPERATOR = re.compile(r"^(>=|<=|<>|!=|>|<|=)?(.*)$")
_FILTER = re.compile(r"^filter\[([a-z_.]+)\]$")


@dataclass
class ListQuery:
    """A parsed query string: conditions, sort columns and the page."""

    #: the page's size (the caller's default: ``WORK_MANAGER_DEFAULT_PAGE_SIZE_*``)
    size: int
    where: list[ColumnElement[bool]] = field(default_factory=list)
    order_by: list[Any] = field(default_factory=list)
    number: int = 1
    #: ``include=``: ``items``, ``events``, ``events_count``, ``items_exists``,
    #: ``events_exists`` (``items_count`` is always there)
    include: set[str] = field(default_factory=set)
    #: ``fields[work_orders|items|events]=a,b``: the keys kept in each kind of row
    fields: dict[str, list[str]] = field(default_factory=dict)


def bad(message: str, param: str) -> InvalidQuery:
    return InvalidQuery(message, details={"parameter": param})


#: The most comma-separated values one parameter takes: a filter's list is one bound
#: parameter each (PostgreSQL takes at most 65,535 a statement: an MCP ``work.list`` of
#: 66,000 types answered ``internal_error``), a sort one term each.
MAX_LIST_VALUES = 1000


def readable(params: Iterable[tuple[str, str]]) -> Iterable[tuple[str, str]]:
    """The query string's parameters, each refused when it holds a NUL character (no
    database compares with one: PostgreSQL refuses it, so it is refused here on every
    backend, as the 400 of a bad query) or more than :data:`MAX_LIST_VALUES` values."""
    for param, value in params:
        if "\x00" in param or "\x00" in value:
            raise bad(f"{param!r}: must not contain NUL characters", param)
        if value.count(",") >= MAX_LIST_VALUES:
            raise bad(
                f"{param}: at most {MAX_LIST_VALUES} comma-separated values; list in pages",
                param,
            )
        yield param, value


def merged(params: Iterable[tuple[str, str]], repeatable: Collection[str]) -> list[tuple[str, str]]:
    """The query's parameters with each one given more than once read as one comma list
    (``filter[state]=a&filter[state]=b`` is ``filter[state]=a,b``, as an HTTP client
    sends a list; so is ``sort``), except the filters named in ``repeatable``, each of
    whose conditions must hold (a comparison given twice is a range:
    ``filter[created_at]=>=X&filter[created_at]=<Y``). A list given twice used to be
    two conditions at once, so ``state`` given twice found nothing. The page parameters
    are left as they are (the last one given counts)."""
    lists: dict[str, list[str]] = {}
    out: list[tuple[str, str] | str] = []
    for param, value in params:
        match = _FILTER.match(param)
        if (match.group(1) if match else param) in repeatable or param in _PAGING:
            out.append((param, value))
        elif param in lists:
            lists[param].append(value)
        else:
            lists[param] = [value]
            out.append(param)
    return [
        item if isinstance(item, tuple) else (item, ",".join(v for v in lists[item] if v))
        for item in out
    ]


def csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def states(value: str, param: str, allowed: Iterable[str]) -> list[str]:
    allowed = list(allowed)
    values, known = csv(value), set(allowed)
    unknown = [v for v in values if v not in known]
    if not values or unknown:
        said = ", ".join(repr(v) for v in unknown) or repr(value)  # not a Python list
        raise bad(f"{param}: unknown state {said}; one of {', '.join(allowed)}", param)
    return values


_COMPARISONS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "=": operator.eq,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "<>": operator.ne,
    "!=": operator.ne,
}


def compare(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    return _COMPARISONS[op](column, value)


def operator_of(value: str, param: str, parse: Callable[[str], Any]) -> tuple[str, Any]:
    match = _OPERATOR.match(value.strip())
    op, raw = (match.group(1) or "=", match.group(2).strip()) if match else ("=", value)
    try:
        return op, parse(raw)
    except Unreadable as exc:
        raise bad(f"{param}: cannot read {raw!r}: {exc}", param) from None
    except (ValueError, OverflowError):
        raise bad(f"{param}: cannot read {raw!r}", param) from None


class Unreadable(ValueError):
    """A value a parser could not read, saying why (the 400's message adds it)."""


def as_datetime(raw: str) -> datetime:
    """An ISO 8601 instant (RFC 3339's ``z`` too); one without a zone is UTC."""
    text = raw[:-1] + "+00:00" if raw[-1:] in ("Z", "z") else raw
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise Unreadable("not an ISO 8601 date or instant (2026-12-07T10:00:00Z)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:  # here, so an out-of-range instant is a 400, not a 500
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise Unreadable("outside the years 1 to 9999 once in UTC") from None


def as_int(raw: str) -> int:
    number = int(raw)
    if abs(number) > 2**31 - 1:
        raise ValueError(raw)
    return number


def as_bool(value: str, param: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise bad(f"{param}: expected true or false", param)


#: The page parameters (upstream's aliases beside ``page[size]`` and ``page[number]``).
PAGE_SIZE, PAGE_NUMBER = ("page[size]", "limit", "per_page"), ("page[number]", "page")


def page(query: ListQuery, param: str, value: str, limit: int) -> bool:
    """Read a page parameter (``page[size]``/``limit``/``per_page``, ``page[number]``/
    ``page``) into ``query``; ``False`` when ``param`` is none of them."""
    if param in PAGE_SIZE:
        query.size = min(max(operator_of(value, param, as_int)[1], 1), limit)
    elif param in PAGE_NUMBER:
        query.number = max(operator_of(value, param, as_int)[1], 1)
    else:
        return False
    return True


def paged(query: ListQuery, data: list[dict[str, Any]], total: int) -> dict[str, Any]:
    last_page = max(1, -(-total // query.size))
    meta = {"current_page": query.number, "per_page": query.size, "total": total}
    return {"data": data, "meta": {**meta, "last_page": last_page}}


def filter_name(param: str, bare: tuple[str, ...] = ("state", "type")) -> str:
    """``filter[name]`` → ``name``; the ``bare`` names are filters too (``?state=``)."""
    match = _FILTER.match(param)
    return match.group(1) if match else param if param in bare else ""


def sort_by(value: str, sorts: dict[str, Any], default: str) -> list[Any]:
    columns = []
    for token in csv(value) or csv(default):
        name = token.lstrip("-")
        column = sorts.get(name)
        if column is None:
            raise bad(f"unknown sort {name!r}; one of {', '.join(sorts)}", "sort")
        columns.append(column.desc() if token.startswith("-") else column.asc())
    return columns


def uuids(value: str, param: str) -> list[Any]:
    try:
        return [uuid.UUID(v) for v in csv(value)]
    except ValueError:
        # An id that is not a UUID matches no order (like a 404), rather than failing.
        return []


#: The page parameters, which ``merged`` leaves alone.
_PAGING = frozenset((*PAGE_SIZE, *PAGE_NUMBER))
