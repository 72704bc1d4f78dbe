"""The SQL the schema carries besides its tables, as files: ``functions.sql``
(PostgreSQL: the order-step functions and the audit trigger) and ``sqlite.sql``.

A file is a sequence of sections, each starting with a line ``-- name: <object>
(migration NNNN)``: the object it defines and the migration that created it (or last
changed it). :func:`sections` reads them; ``create_all`` runs them (:mod:`..models`); the
migrations keep their own frozen copies, and a test checks both agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- name: (?P<name>\w+) \(migration (?P<migration>\d{4})\)$", re.M)
_FUNCTION = re.compile(r"CREATE OR REPLACE FUNCTION (\w+)\((.*?)\)\s*(?:RETURNS|LANGUAGE)", re.S)


@dataclass(frozen=True)
class Section:
    name: str
    migration: str
    sql: str

    @property
    def signature(self) -> str | None:
        """``name(type,…)`` of the function it defines (its IN arguments), as
        ``to_regprocedure`` takes it; ``None`` when it defines no function."""
        found = _FUNCTION.search(self.sql)
        if found is None:
            return None
        types = []
        for arg in found.group(2).split(","):
            words = arg.split()
            if words and words[0].upper() != "OUT":
                types.append(words[-1])
        return f"{found.group(1)}({','.join(types)})"


@cache
def sections(file: str) -> tuple[Section, ...]:
    """The sections of ``file`` (``functions.sql`` or ``sqlite.sql``), in order."""
    text = resources.files(__package__).joinpath(file).read_text(encoding="utf-8")
    headers = list(_HEADER.finditer(text))
    out = []
    for n, header in enumerate(headers):
        end = headers[n + 1].start() if n + 1 < len(headers) else len(text)
        out.append(Section(header["name"], header["migration"], text[header.end() : end].strip()))
    return tuple(out)


def script(file: str) -> str:
    """Every section of ``file``, to run at once."""
    return "\n\n".join(s.sql for s in sections(file))


def function_signatures() -> tuple[str, ...]:
    """The PostgreSQL functions the code calls, as ``to_regprocedure`` signatures."""
    return tuple(
        s.signature
        for s in sections("functions.sql")
        if s.signature and s.name.startswith("workmanager_")
    )
