"""``workmanager/db/sql/queries.sql`` holds every statement the PostgreSQL store sends:
each name in it is used by the code that builds the statements, none the code asks for
is missing, and every placeholder of every template is filled."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workmanager.db.sql import Queries, _queries, queries

from ..support.statements import every_statement

_PLACEHOLDER = re.compile(r"\{\w*\}")


def test_every_query_is_used_and_none_is_missing() -> None:
    statements = every_statement()  # a missing name raises KeyError while building
    # ... + submit, heartbeat, part, submit keyed, release and fail (keyed or not), ...
    assert len(statements) == 2**9 + 4 + 4 + 1 + 2 + 4 + 4 + 15 + 8 + 20 + 7
    unused = set(queries.sections) - queries.requested
    assert not unused, f"queries.sql names no code uses: {sorted(unused)}"
    assert queries.requested <= set(queries.sections)


def test_every_placeholder_is_filled() -> None:
    for name, text in every_statement().items():
        assert not _PLACEHOLDER.search(text), f"{name}: a template marker left in {text!r}"
        assert text.strip(), name


def test_whole_statements_have_no_markers_and_templates_do() -> None:
    """A section read with ``text`` is SQL as sent; one read with ``template`` has the
    markers its callers fill: the file says which by its text alone."""
    sections = queries.sections
    assert "{" not in sections["order_exists"] and "{" not in sections["checkout_order"]
    assert {"{eligible}", "{checkout_order}"} <= set(_PLACEHOLDER.findall(sections["grant_pick"]))
    for name, text in sections.items():
        assert not text.startswith("--"), f"{name}: its comment was taken as SQL"
        assert "-- name:" not in text, name


def test_comments_are_left_out_and_names_are_unique(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workmanager.db.sql as package

    body = (
        "-- top\n\n-- name: one\n-- what it does\n-- and returns\nSELECT 1\n\n"
        "-- name: two\nSELECT {x}\n"
    )
    (tmp_path / "q.sql").write_text(body, encoding="utf-8")
    (tmp_path / "dup.sql").write_text(body + "-- name: one\nSELECT 2\n", encoding="utf-8")
    monkeypatch.setattr(package.resources, "files", lambda _package: tmp_path)
    _queries.cache_clear()
    try:
        loaded = Queries("q.sql")
        assert loaded.text("one") == "SELECT 1"
        assert loaded.template("two", x="2") == "SELECT 2"
        assert loaded.requested == {"one", "two"}
        with pytest.raises(KeyError):
            loaded.text("three")
        with pytest.raises(ValueError, match="named twice"):
            _ = Queries("dup.sql").sections
    finally:
        _queries.cache_clear()
