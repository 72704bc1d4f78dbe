"""The order-type base class: the hooks a deployment implements per type (SPEC §4.1)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .diff import Diff
from .jsonvalues import problems
from .types import JSON, NAME_MAX, SEQ_MAX, ApplyContext, ItemView, OrderView, is_name

#: What a type name and a ``max_attempts`` must be, wherever they are declared (an
#: ``OrderType``'s attributes, checked when it is registered; an ``ItemSpec`` from
#: ``plan``): the columns store them as given on every database, or refuse them on one.
TYPE_NAME_RULE = (
    f"a storable string of 1 to {NAME_MAX} characters, with no space at either end and no"
    " control character"
)
ATTEMPTS_RULE = f"a whole number from 1 to {SEQ_MAX}"


def is_type_name(value: Any) -> bool:
    # "docs.summarize " registered, then "docs.summarize" was unknown among names that
    # looked the same
    return (
        is_name(value)
        and not problems(value)
        and value == value.strip()
        and not any(unicodedata.category(c) == "Cc" for c in value)
    )


def is_attempts(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= SEQ_MAX


@dataclass(frozen=True)
class ItemSpec:
    """One work item that ``plan`` asks for. Unset fields take the order's defaults."""

    input: JSON | None = None
    type: str | None = None
    max_attempts: int | None = None
    parts_required: Sequence[str] | None = None


@dataclass(frozen=True)
class Part:
    """A validated part handed to ``assemble``."""

    part_key: str
    seq: int | None
    payload: JSON


class OrderType:
    """Subclass per type of work order; only ``type`` and ``apply`` are required.

    Hooks receive read-only snapshots (:class:`OrderView`, :class:`ItemView`). Validation
    hooks raise :class:`workmanager.ValidationFailed`. ``apply`` must be idempotent: it may
    run more than once for one order (a crashed worker, a retry); its recorded effect
    (state, diff, ``applied`` event) happens exactly once.
    """

    type: ClassVar[str] = ""
    auto_approve: ClassVar[bool] = False
    #: Default ``max_attempts`` for items of this type (``None``: the setting's default).
    max_attempts: ClassVar[int | None] = None
    #: Every submit and submit-part must carry evidence (absent: 422 ``validation_failed``
    #: at path ``evidence``, validator ``required``). Without it, evidence is optional and
    #: its schema applies only to evidence that was sent.
    requires_evidence: ClassVar[bool] = False

    # --- proposing and planning -------------------------------------------------------
    def schema(self) -> JSON | None:
        """JSON Schema (draft 2020-12) of the order payload, or ``None``."""
        return None

    def plan(self, order: OrderView) -> list[ItemSpec]:
        """The items to create for ``order``; default one item whose input is the payload."""
        return [ItemSpec(input=dict(order.payload))]

    # --- whole submissions ------------------------------------------------------------
    def result_schema(self, item: ItemView) -> JSON | None:
        """JSON Schema of an item's submitted result, or ``None``."""
        return None

    def validate_submission(self, item: ItemView, result: JSON) -> None:
        """Custom check of a submitted result: runs on every result that passed
        ``result_schema`` (or when there is none), never on one it refused. Raise
        ``ValidationFailed``."""

    def evidence_schema(self, item: ItemView) -> JSON | None:
        """JSON Schema of the evidence sent with a whole result, or ``None`` (any).
        Checked beside ``result_schema``; ``validate_submission`` runs only when both
        passed. Errors' paths start with ``evidence``."""
        return None

    # --- partial submissions ----------------------------------------------------------
    def part_schema(self, item: ItemView, part_key: str) -> JSON | None:
        """JSON Schema of one part's payload, or ``None``."""
        return None

    def part_evidence_schema(self, item: ItemView, part_key: str) -> JSON | None:
        """JSON Schema of the evidence sent with one part, or ``None`` (any); checked
        beside ``part_schema``, and a part it refuses is stored ``rejected``."""
        return None

    def validate_part(self, item: ItemView, part_key: str, payload: JSON, seq: int | None) -> None:
        """Custom check of one part: runs on every payload that passed ``part_schema`` (or
        when there is none). Raise ``ValidationFailed``."""

    def required_parts(self, item: ItemView) -> list[str]:
        """Part keys that ``finalize`` in strict mode requires; default the item's list."""
        return list(item.parts_required)

    def assemble(self, item: ItemView, parts: list[Part]) -> JSON:
        """The item's result from its latest validated part per key."""
        return {part.part_key: part.payload for part in parts}

    def validate_assembled(self, item: ItemView, result: JSON) -> None:
        """Custom check of the assembled result; always runs (there is no schema before it).
        Raise ``ValidationFailed``."""

    # --- approval and apply -----------------------------------------------------------
    def can_approve(self, order: OrderView) -> bool:
        """Cross-item check before approval."""
        return True

    def preview(self, order: OrderView) -> Diff | None:
        """What ``apply`` would change, computed before anyone approves; ``None`` (the
        default) when the type cannot tell. The review console shows it on a submitted
        order's page. It must not change anything: it may run many times, or never.
        An exception is shown to the reviewer as "no preview" with its message."""
        return None

    def before_apply(self, order: OrderView) -> None:
        """Runs before each apply attempt."""

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        """Make the order's effect happen; must be idempotent. Returns the diff."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply()")

    def after_apply(self, order: OrderView, diff: Diff) -> None:
        """Runs once, after the apply was recorded."""

    def __repr__(self) -> str:
        return f"<OrderType {self.type!r}>"
