"""What the adapters read as a value left out, as upstream's Laravel reads its input:
``null`` in a field that has a default is that default (its rules say ``nullable``), and
an empty value where a query parameter or a filter is expected (``?min_priority=``,
MCP ``work.list``'s ``{"filter": {"state": ""}}``) is no value. The HTTP query string's
form of the second rule is :func:`.middleware._blank` (on the raw bytes, before any route);
a body's values other than ``null`` are taken as sent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def null_is_default(data: dict[str, Any], defaulted: Iterable[str]) -> dict[str, Any]:
    """``data`` without the ``defaulted`` fields it sends as ``null``."""
    nulls = [name for name in defaulted if name in data and data[name] is None]
    return {k: v for k, v in data.items() if k not in nulls} if nulls else data


def empty(value: Any) -> bool:
    """An empty filter value: ``null``, ``""`` or ``[]``."""
    return value is None or value == "" or value == []
