"""Log lines said once in a while (workmanager/saying.py): an outage fails every request
alike, and a line per request flooded the log."""

from __future__ import annotations

import logging

import pytest

from workmanager.saying import Throttled, one_line, some


def test_a_line_is_said_once_a_while_with_how_many_were_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    said = Throttled(logging.getLogger("test.saying"), every=30, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.saying"):
        for n in range(50):
            said.warning("db", "database down: %s", f"try {n}\n\tagain\x1b[2J")
        said.warning("redis", "redis down")  # another key: its own window
        now[0] += 29.9
        said.warning("db", "database down: %s", "not yet")
        now[0] += 0.1
        said.warning("db", "database down: %s", "still")
    assert [r.getMessage() for r in caplog.records] == [
        "database down: try 0 again\\x1b[2J",  # one line, its escape codes shown as such
        "redis down",
        "database down: still (and 50 more like it in the last 30 s)",
    ]


def test_one_line_and_some() -> None:
    assert one_line("a\n\tb  c\r\n") == "a b c"
    assert some(list(range(3))) == "0, 1, 2"
    assert some(list(range(12)), at_most=2) == "0, 1 …"
    assert some([]) == ""


def test_a_callers_text_in_a_log_line_is_one_line_escaped_and_cut() -> None:
    from workmanager.saying import logged

    assert logged("GET /a\n[2026] WARNING forged") == "GET /a [2026] WARNING forged"
    assert logged("a\u202eb") == "a\\u202eb"
    assert logged("x" * 500) == "x" * 500
    assert logged("x" * 501) == "x" * 500 + "…"
    assert logged("\x1b" * 600) == "\\x1b" * 125 + "…"  # cut after escaping, and marked
    assert len(logged("y" * 1_000_000)) == 501
