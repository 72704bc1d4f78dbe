"""Diffs produced by ``apply``: what changed, per top-level key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def same(a: Any, b: Any) -> bool:
    """Whether two JSON values are equal as JSON: Python's ``==`` has ``1 == True`` (and
    ``[1] == [True]``), so a flag turned on from 1 showed no change."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    changes: dict[str, dict[str, Any]] = {}
    for key in before.keys() | after.keys():
        if key not in before:
            changes[key] = {"type": "added", "value": after[key]}
        elif key not in after:
            changes[key] = {"type": "removed", "value": before[key]}
        elif not same(before[key], after[key]):
            changes[key] = {"type": "modified", "from": before[key], "to": after[key]}
    return dict(sorted(changes.items()))


@dataclass(frozen=True)
class Diff:
    """The effect of applying an order: ``before``, ``after``, a ``summary`` and ``changes``."""

    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    def __post_init__(self) -> None:
        """Refuse what cannot be compared at once, naming it, rather than later with
        ``'NoneType' object has no attribute 'keys'`` (``apply`` returns one: recorded as
        the apply's failure)."""
        for name in ("before", "after"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise TypeError(f"Diff.{name} must be a dict, got {type(value).__name__}")
        if not isinstance(self.summary, str):
            raise TypeError(f"Diff.summary must be a string, got {type(self.summary).__name__}")

    @classmethod
    def empty(cls, summary: str = "no changes") -> Diff:
        return cls({}, {}, summary)

    @property
    def changes(self) -> dict[str, dict[str, Any]]:
        return _changes(self.before, self.after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "summary": self.summary,
            "changes": self.changes,
        }
