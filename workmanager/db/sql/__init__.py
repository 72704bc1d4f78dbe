"""The SQL the schema carries besides its tables, as files: ``functions.sql``
(PostgreSQL: the order-step functions and the audit trigger) and ``sqlite.sql``.

A file is a sequence of sections, each starting with a line ``-- name: <object>
(migration NNNN)``: the object it defines and the migration that created it (or last
changed it). :func:`sections` reads them; ``create_all`` runs them (:mod:`..models`); the
migrations keep their own frozen copies, and a test checks both agree.

``queries.sql`` holds the statements the PostgreSQL store sends (:mod:`..postgres`), each
a section ``-- name: <query>`` (no migration: nothing in the schema), its comment lines,
then its SQL. A section is a whole statement (:meth:`Queries.text`) or a part that
Python composes (:meth:`Queries.template`, ``{placeholder}`` markers filled with
``str.format``); which parts a statement uses stays in Python. :data:`queries` records
each name asked for, so a test can check that every section is used.
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


_QUERY = re.compile(r"^-- name: (?P<name>\w+)$", re.M)


class Queries:
    """The named sections of ``queries.sql`` (read once), recording the names asked for."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.requested: set[str] = set()

    @property
    def sections(self) -> dict[str, str]:
        return _queries(self.file)

    def text(self, name: str) -> str:
        """The SQL of section ``name``, its comment lines left out; ``KeyError`` when
        there is none."""
        self.requested.add(name)
        return self.sections[name]

    def template(self, name: str, **values: str) -> str:
        """Section ``name`` with its ``{placeholder}`` markers filled by ``values``
        (the raw template when none are given)."""
        text = self.text(name)
        return text.format(**values) if values else text


@cache
def _queries(file: str) -> dict[str, str]:
    text = resources.files(__package__).joinpath(file).read_text(encoding="utf-8")
    headers = list(_QUERY.finditer(text))
    out: dict[str, str] = {}
    for n, header in enumerate(headers):
        end = headers[n + 1].start() if n + 1 < len(headers) else len(text)
        lines = text[header.end() : end].strip("\n").split("\n")
        while lines and lines[0].startswith("--"):
            lines.pop(0)
        while lines and (not lines[-1].strip() or lines[-1].startswith("--")):
            lines.pop()  # a comment heading the next block of sections
        name = header["name"]
        if name in out:
            raise ValueError(f"{file}: query {name} named twice")
        out[name] = "\n".join(lines).strip()
    return out


#: The PostgreSQL store's statements (``queries.sql``).
queries = Queries("queries.sql")
