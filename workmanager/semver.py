"""Semantic versions (semver.org 2.0.0): agent versions must be one."""

from __future__ import annotations

import re

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def is_semver(text: str) -> bool:
    """``1.2.3`` and friends; a leading ``v`` (``v2.1.0``, as git tags and many agents
    write it) is accepted too."""
    if text[:1] in ("v", "V"):
        text = text[1:]
    return SEMVER.match(text) is not None
