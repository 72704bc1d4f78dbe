"""JSON given on the command line (``--payload``, ``--meta``, ``--result`` …) is read by
one function, :func:`workmanager.cli.render.json_object`: every way it can be wrong is a
usage error (one line and the command's help), never a traceback."""

from __future__ import annotations

import click
import pytest

from workmanager.cli.render import json_object


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ('{"a": ' + "9" * 5000 + "}", "Exceeds the limit (4300 digits)"),  # was a ValueError
        ('{"a": NaN}', "NaN is not valid JSON"),  # was accepted here, refused further in
        ('{"a": 1', "Expecting"),
        ("[1]", "must be a JSON object"),
        ("[" * 200 + "]" * 200, "nests deeper than 64 levels"),
    ],
)
def test_every_bad_json_option_is_a_usage_error(raw: str, said: str) -> None:
    with pytest.raises(click.BadParameter) as raised:
        json_object(raw, 64, "--payload")
    assert said in raised.value.message
    assert "sys.set_int_max_str_digits" not in raised.value.message


def test_a_json_object_is_read() -> None:
    assert json_object('{"a": [1, 2.5, "x", null]}', 64, "--payload") == {"a": [1, 2.5, "x", None]}


def test_a_table_never_sends_a_control_character_to_the_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by an adversarial pass: an agent id holding ESC (MCP accepts any text) was
    printed raw in ``orders show`` and ``items list``, where it retitled or cleared the
    operator's terminal. Each is shown as its escape; other text as it is."""
    from workmanager.cli.render import pairs, table

    evil = "agent\x1b]0;owned\x07\x1b[2J\x9b"
    table([{"leased_by_agent_id": evil, "name": "ünï 😀"}], ("leased_by_agent_id", "name"))
    pairs({"actor_id": evil}, ["actor_id"])
    out = capsys.readouterr().out
    assert not any(c in out for c in "\x1b\x07\x9b"), repr(out)
    assert out.count("agent\\x1b]0;owned\\x07\\x1b[2J\\x9b") == 2 and "ünï 😀" in out
