"""Small value types shared by the services and the adapters."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from .errors import NotFound
from .lease_tokens import Holder
from .lease_tokens import parse as parse_token

#: A JSON object as it crosses the edge of the system (payloads, results, metadata).
JSON = dict[str, Any]

#: The most characters of a name, key or code (the columns' width): order types, part
#: keys, error codes, agent ids.
NAME_MAX = 191
#: The highest part ``seq`` and ``max_attempts`` (32-bit columns).
SEQ_MAX = 2**31 - 1


def is_name(value: Any) -> bool:
    """A string of 1 to :data:`NAME_MAX` characters."""
    return isinstance(value, str) and 0 < len(value) <= NAME_MAX


#: Unicode categories an agent id may not hold: controls, format characters (zero-width,
#: bidi overrides), surrogates, private use, unassigned, spaces other than the plain one,
#: line and paragraph separators.
_UNREADABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
#: Characters that draw nothing though their category says a letter, a symbol or a mark
#: (Hangul fillers, the braille blank, the combining grapheme joiner, Khmer's inherent
#: vowels): ``agentA1`` + U+3164 looked like ``agentA1``.
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5")


def agent_id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be an agent id (or a token's name, which stands for one), or
    ``None``. The one rule, for HTTP, MCP, the Python API and ``tokens create``: an id
    reads as what it is, so ``agentA1`` followed by a zero-width space no longer passed
    for the bound agent ``agentA1`` on the console, and ``\x1f`` (the idempotency key's
    separator) cannot make two agents' keys one."""
    if not isinstance(value, str) or not value.strip() or len(value) > NAME_MAX:
        return f"1 to {NAME_MAX} characters of text"
    if value != value.strip():
        return "no spaces at its start or end"
    if not (value.isascii() and value.isprintable()) and any(
        c != " " and (unicodedata.category(c) in _UNREADABLE or c in _BLANK) for c in value
    ):
        return (
            "no control, format (zero-width, bidi), blank, unassigned or private-use"
            " characters, and no space but the plain one"
        )
    return None


@dataclass(frozen=True)
class Actor:
    """Who did something: ``user``, ``agent`` or ``system``, and their id."""

    type: str
    id: str | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls("system", "system")


@dataclass(frozen=True)
class AgentInfo:
    """An agent and the request it acts through, as recorded in provenance (SPEC §4.7)."""

    id: str
    name: str | None = None
    version: str | None = None
    model_name: str | None = None
    runtime: str | None = None
    request_id: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    principal: str | None = None
    idempotency_key_hash: str | None = None
    extra: JSON = field(default_factory=dict)
    #: The request's headers (lower-case names; never ``Authorization``, ``Cookie`` or
    #: ``X-Lease-Token``), for custom provenance enrichers; not stored unless one does.
    headers: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    #: The id was chosen by the caller (``X-Agent-ID`` or an MCP argument under a token not
    #: bound to an agent): anyone can mint such ids, so metrics keep them out of labels.
    self_named: bool = False

    @property
    def actor(self) -> Actor:
        return Actor("agent", self.id)


@dataclass(frozen=True)
class ItemView:
    """A read-only snapshot of a work item, handed to order-type hooks and agents."""

    id: uuid.UUID
    order_id: uuid.UUID
    type: str
    state: str
    input: JSON
    result: JSON | None
    assembled_result: JSON | None
    attempts: int
    max_attempts: int
    parts_required: tuple[str, ...]
    progress: JSON | None = None
    order_type: str = ""
    tenant_id: str | None = None


@dataclass(frozen=True)
class OrderView:
    """A read-only snapshot of an order and its items, handed to order-type hooks."""

    id: uuid.UUID
    type: str
    state: str
    priority: int
    payload: JSON
    meta: JSON
    items: tuple[ItemView, ...] = ()


def as_id(value: Any, kind: str) -> uuid.UUID:
    """An order's or item's id as the library, HTTP, MCP and the web console take it: a UUID,
    or its text (as every answer gives ids); anything else names no row, so it is not
    found (404 ``not_found``), on every surface and every database alike."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise NotFound(f"{kind} {value!r} not found", details={f"{kind}_id": str(value)})


@dataclass(frozen=True)
class Lease:
    """A granted lease: present it on every call that acts on the item (SPEC §4.2, §4.4).

    ``token`` is the opaque string checkout returned (``<fence>.<secret>``, see
    :mod:`workmanager.lease_tokens`); it proves possession. ``fence`` is its integer part,
    strictly increasing per item: what external systems compare to refuse stale writers.
    """

    item_id: uuid.UUID
    order_id: uuid.UUID
    agent_id: str
    token: str
    expires_at: datetime
    heartbeat_every_seconds: int
    item: ItemView | None = None

    def __post_init__(self) -> None:
        # ids as their text (as an answer gives them) are taken; anything else names no row
        if not isinstance(self.item_id, uuid.UUID) or not isinstance(self.order_id, uuid.UUID):
            object.__setattr__(self, "item_id", as_id(self.item_id, "item"))
            object.__setattr__(self, "order_id", as_id(self.order_id, "order"))

    @cached_property
    def _parsed(self) -> tuple[int, str | None]:
        return parse_token(self.token)

    @property
    def fence(self) -> int:
        """The fencing number of this lease (``-1`` for a token that is not well formed)."""
        return self._parsed[0]

    @cached_property
    def holder(self) -> Holder:
        """What the lease checks compare: agent, fence and the secret's hash."""
        return Holder(self.agent_id, *self._parsed)

    @cached_property
    def agent(self) -> AgentInfo:
        """Its holder as an agent with nothing more said of it: who acts when a call on
        the lease names no agent (kept, like ``holder``, across renewals)."""
        return AgentInfo(id=self.agent_id)

    def renewed(self, expires_at: datetime, item: ItemView | None = None) -> Lease:
        """This lease (of its own class) expiring at ``expires_at``, carrying ``item`` when
        given (the row as the renewal wrote it): what a heartbeat returns. A copy of the
        instance's fields, the token's parse included (the next beat does not hash the
        secret again); ``dataclasses.replace`` would rebuild it through ``__init__``."""
        renewed = object.__new__(type(self))
        fields_ = renewed.__dict__  # a frozen dataclass keeps its fields in __dict__
        fields_.update(self.__dict__)
        fields_["expires_at"] = expires_at
        if item is not None:
            fields_["item"] = item
        return renewed


@dataclass(frozen=True)
class ApplyContext:
    """What ``OrderType.apply`` gets besides the order: the attempt and the fencing tokens."""

    attempt: int
    #: item id -> the fence of the item's last lease (never the secret): pass it to an
    #: external system that refuses writes carrying a lower number than it has seen.
    lease_tokens: dict[str, int]
    actor: Actor
    #: earlier runs of this apply that raised (recorded failures; a run its process's end
    #: cut short is not one): ``APPLY_MAX_RETRIES`` counts these
    failures: int = 0

    @property
    def fences(self) -> dict[str, int]:
        """The same as ``lease_tokens``, by the name the docs use."""
        return self.lease_tokens
