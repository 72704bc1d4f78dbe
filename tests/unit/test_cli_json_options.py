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
