"""``workmanager.jsonvalues``: what user code says, made storable; numbers compared as
PostgreSQL's jsonb gives them back. (Lone surrogates are tested here, away from logging:
pytest-xdist cannot send a test report whose captured log holds one.)"""

from __future__ import annotations

from workmanager.jsonvalues import canonical, problems, readable


def test_readable_replaces_what_no_json_column_stores() -> None:
    name = b"r-\xff.txt".decode("utf-8", "surrogateescape")  # as os.listdir decodes it
    said = {"message": f"cannot open {name}\x00", f"k\x00{name}": [name, 1, None]}
    stored = readable(said)
    assert stored == {
        "message": "cannot open r-\ufffd.txt\ufffd",
        "k\ufffdr-\ufffd.txt": ["r-\ufffd.txt", 1, None],
    }
    assert problems(stored) == [] and problems(said) != []
    assert readable("plain 😀") == "plain 😀"


def test_canonical_writes_numbers_as_jsonb_gives_them_back() -> None:
    assert canonical({"a": 1e23, "b": -0.0}) == canonical({"a": 10**23, "b": 0.0})
    assert canonical({"a": 1.5e-7}) == b'{"a":1.5e-07}'
    assert canonical({"s": "e+ -0.0"}) == b'{"s":"e+ -0.0"}'  # text is left as it is
    assert canonical({"a": 1}) != canonical({"a": True})


def test_floats_that_grow_past_the_limit_written_out_in_full_are_refused() -> None:
    """A JSON-values pass: PostgreSQL's jsonb reads ``1e308`` back as its 309 digits, so
    a 3.6 MB submit of such floats read back as 186 MB (1.3 GB of server memory for one
    GET). What floats gain written out in full is counted; past 4 MiB the value is
    refused, once, at its own path."""
    from workmanager.jsonvalues import MAX_SPELLED_OUT

    many = MAX_SPELLED_OUT // 303 + 1  # 1e308 gains 303: 309 digits for its 6
    found = problems({"x": [1e308] * many, "y": [1e-300] * 10}, "result")
    assert found == [{"path": "result", "message": found[0]["message"], "validator": "maxLength"}]
    assert "send such numbers as strings" in found[0]["message"]
    assert problems({"x": [1e308] * (many - 1)}) == []  # the limit itself is taken
    assert problems({"x": [1e-20] * 100_000, "y": [0.5, 1e15, 12345.678] * 1000}) == []
    # what a float gains, not its exponent, is counted (a review pass: 750,000 of 1.5e-06,
    # 2 characters more each, were refused)
    assert problems({"samples": [1.5e-06] * 750_000}) == []
