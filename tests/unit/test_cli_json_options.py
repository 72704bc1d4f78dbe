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
        ('{"a": ' + "9" * 5000 + "}", "an integer of more than 4300 digits"),  # was a ValueError
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


@pytest.mark.parametrize(
    ("env", "red"), [({}, True), ({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False)]
)
def test_the_open_server_warning_honours_no_color(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], red: bool
) -> None:
    """The tables honoured NO_COLOR and TERM=dumb; the red start-up warning did not."""
    from workmanager import Settings
    from workmanager.cli import render

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    said: list[dict[str, object]] = []
    monkeypatch.setattr(render.click, "secho", lambda text, **kw: said.append(kw))
    render.warn_if_open(Settings(auth="none"), "the HTTP API")
    assert [kw["fg"] == "red" for kw in said] == [red]


def test_a_narrow_terminal_never_cuts_an_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 80 columns (and 120 for orders) ids showed as ``3f29a453-599…``: nothing an
    operator could paste into ``orders show``."""
    import io

    from rich.console import Console

    from workmanager.cli import render

    out = io.StringIO()
    monkeypatch.setattr(render, "console", lambda stderr=False: Console(file=out, width=80))
    order_id, item_id = (
        "ca5855d1-c941-41b0-999a-10c15aab6c91",
        "b4e8733a-8c94-4a3c-a762-bd758ea654d6",
    )
    row = {"id": order_id, "item_id": item_id, "type": "demo.research" * 3, "state": "queued"}
    render.table([row], ("id", "item_id", "type", "state", "created_at", "error"))
    assert order_id in out.getvalue() and item_id in out.getvalue(), out.getvalue()


def test_a_file_a_command_could_not_write_is_named_not_called_the_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OSError naming a file (a directory not writable) is ``os_error`` naming it;
    only stdout's own failures are ``output_failed``."""
    import workmanager.cli as cli_module

    def refused(**_: object) -> None:
        raise PermissionError(13, "Permission denied", "/srv/ro/var")

    monkeypatch.setattr(cli_module.cli, "main", refused)
    with pytest.raises(SystemExit) as ended:
        cli_module.main(["db", "upgrade", "--json"])
    assert ended.value.code == 1
    said = capsys.readouterr()
    assert said.err.startswith("error [os_error]: '/srv/ro/var': Permission denied"), said.err
    assert '"code": "os_error"' in said.out
