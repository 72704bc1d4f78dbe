"""Diff, JSON Schema errors, the registry and WORK_MANAGER_ORDER_TYPES, the public names."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

import workmanager
from tests.support import registering
from tests.support.types import Multi, Simple
from workmanager import Diff, ItemSpec, OrderType, Registry, Settings, ValidationFailed, WorkManager
from workmanager.errors import ConfigurationError, UnknownOrderType
from workmanager.schema import check_schema, schema_errors, validate

# --- Diff -------------------------------------------------------------------------------


def test_diff_changes_added_modified_removed() -> None:
    diff = Diff(
        before={"kept": 1, "changed": "a", "gone": [1, 2], "nested": {"x": 1}},
        after={"kept": 1, "changed": "b", "new": True, "nested": {"x": 2}},
        summary="s",
    )
    assert diff.changes == {
        "changed": {"type": "modified", "from": "a", "to": "b"},
        "gone": {"type": "removed", "value": [1, 2]},
        "nested": {"type": "modified", "from": {"x": 1}, "to": {"x": 2}},
        "new": {"type": "added", "value": True},
    }
    assert list(diff.changes) == sorted(diff.changes)
    data = diff.to_dict()
    assert data["summary"] == "s" and data["changes"] == diff.changes


def test_diff_added_none_is_a_change() -> None:
    assert Diff({}, {"k": None}).changes == {"k": {"type": "added", "value": None}}
    assert Diff({"k": None}, {}).changes == {"k": {"type": "removed", "value": None}}


def test_diff_sees_a_number_become_a_boolean() -> None:
    """Found by an adversarial pass: Python's ``1 == True`` hid these changes."""
    before = {"on": 1, "off": 0, "list": [1], "nested": {"x": 1}, "same": 1, "float": 1}
    after = {"on": True, "off": False, "list": [True], "nested": {"x": True}, "same": 1,
             "float": 1.0}  # fmt: skip
    changes = Diff(before, after).changes
    assert sorted(changes) == ["list", "nested", "off", "on"]
    assert changes["on"] == {"type": "modified", "from": 1, "to": True}


def test_diff_empty() -> None:
    empty = Diff.empty()
    assert (empty.before, empty.after, empty.changes) == ({}, {}, {})
    assert empty.summary == "no changes"
    assert Diff.empty("nothing").summary == "nothing"
    assert Diff({"a": 1}, {"a": 1}).changes == {}


# --- JSON Schema ------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "required": ["name", "tags"],
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "tags": {"type": "array", "items": {"type": "string"}},
        "owner": {
            "type": "object",
            "properties": {"email": {"type": "string", "format": "email"}, "age": {"minimum": 0}},
            "additionalProperties": False,
        },
    },
}


def test_schema_errors_list_every_error_with_nested_paths() -> None:
    payload = {"name": "x", "tags": ["ok", 3, None], "owner": {"age": -1, "extra": 1}}
    with pytest.raises(ValidationFailed) as info:
        validate(SCHEMA, payload, "payload")
    details = info.value.details
    assert info.value.code == "validation_failed" and info.value.http_status == 422
    assert all(set(d) == {"path", "message", "validator"} for d in details)
    found = {(d["path"], d["validator"]) for d in details}
    assert found == {
        ("payload.name", "minLength"),
        ("payload.tags[1]", "type"),
        ("payload.tags[2]", "type"),
        ("payload.owner.age", "minimum"),
        ("payload.owner", "additionalProperties"),
    }
    assert any("extra" in d["message"] for d in details if d["path"] == "payload.owner")
    assert details == sorted(details, key=lambda d: (d["path"], d["validator"]))


def test_required_and_top_level_errors() -> None:
    errors = schema_errors(SCHEMA, {})
    assert {(e["path"], e["validator"]) for e in errors} == {("$", "required")}
    assert len(errors) == 2  # name and tags, one error each
    assert {e["message"] for e in errors} == {
        "'name' is a required property",
        "'tags' is a required property",
    }
    top = schema_errors(SCHEMA, [1], "payload")
    assert top == [
        {"path": "payload", "message": "[1] is not of type 'object'", "validator": "type"}
    ]


def test_draft_2020_12_keywords_are_enforced() -> None:
    schema = {
        "type": "object",
        "properties": {"pair": {"type": "array", "prefixItems": [{"type": "integer"}]}},
        "dependentRequired": {"a": ["b"]},
        "unevaluatedProperties": False,
    }
    errors = schema_errors(schema, {"pair": ["x"], "a": 1})
    validators = {e["validator"] for e in errors}
    assert {"type", "dependentRequired", "unevaluatedProperties"} <= validators


def test_formats_are_asserted() -> None:
    schema = {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}
    errors = schema_errors(schema, {"email": "not-an-email"}, "payload")
    assert [(e["path"], e["validator"]) for e in errors] == [("payload.email", "format")]
    assert schema_errors(schema, {"email": "a@example.com"}) == []


def test_validation_failed_from_a_plain_message() -> None:
    err = ValidationFailed("the answer must cite a source")
    assert err.message == "the answer must cite a source"
    assert err.details == [
        {"path": "$", "message": "the answer must cite a source", "validator": "custom"}
    ]
    listed = ValidationFailed([{"path": "a", "message": "m", "validator": "v"}], "one error")
    assert (listed.message, listed.details[0]["path"]) == ("one error", "a")


def test_valid_instance_and_no_schema_pass() -> None:
    validate(SCHEMA, {"name": "ok", "tags": []}, "payload")
    validate(None, "anything")
    validate({}, 42)


def test_an_invalid_schema_met_while_validating_is_the_types_hook_error() -> None:
    """Checked at registration it is a ConfigurationError (the process does not start);
    met while validating (a schema given per item) it is the type's 422, never a 500."""
    with pytest.raises(ConfigurationError):
        check_schema({"type": "no-such-type"})
    with pytest.raises(ValidationFailed) as raised:
        validate({"type": "no-such-type"}, {}, "result")
    assert raised.value.details[0]["validator"] == "hook_error"


# --- registry ---------------------------------------------------------------------------


class Other(Simple):
    """Same name as Simple: re-registering replaces it."""


def test_register_get_and_replace() -> None:
    registry = Registry([Simple(), Multi()])
    assert registry.names() == ["test.multi", "test.simple"]
    first = registry.get("test.simple")
    assert isinstance(first, Simple) and "test.simple" in registry
    replacement = Other()
    assert registry.register(replacement) is replacement
    assert registry.get("test.simple") is replacement
    assert registry.names() == ["test.multi", "test.simple"]
    assert len(list(registry)) == 2


def test_unknown_type_raises() -> None:
    registry = Registry([Simple()])
    with pytest.raises(UnknownOrderType) as info:
        registry.get("nope")
    assert info.value.code == "unknown_order_type" and info.value.http_status == 422
    assert info.value.details == {"type": "nope"}
    assert "test.simple" in info.value.message


def test_register_refuses_things_that_are_not_order_types() -> None:
    class Nameless(OrderType):
        pass

    registry = Registry()
    with pytest.raises(ConfigurationError):
        registry.register(Nameless())
    with pytest.raises(ConfigurationError):
        registry.register("test.simple")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="register an instance") as raised:
        registry.register(Simple)  # type: ignore[arg-type]  # the class, not an instance
    assert raised.value.hint == "registry.register(Simple())"
    assert registry.names() == []


def test_register_refuses_a_payload_schema_that_is_not_json_schema() -> None:
    class Broken(OrderType):
        type = "test.broken"

        def schema(self) -> dict[str, Any]:
            return {"type": "no-such-type"}

    registry = Registry()
    with pytest.raises(ConfigurationError, match=r"order type 'test.broken', schema\(\)"):
        registry.register(Broken())
    assert "test.broken" not in registry


def test_order_type_defaults() -> None:
    class Bare(OrderType):
        type = "bare"

    bare = Bare()
    assert bare.auto_approve is False and bare.schema() is None
    assert repr(bare) == "<OrderType 'bare'>"
    with pytest.raises(NotImplementedError):
        bare.apply(None, None)  # type: ignore[arg-type]
    assert ItemSpec().parts_required is None
    # and it is not registered: every approved order would fail in apply
    with pytest.raises(ConfigurationError, match=r"'bare' \(Bare\) does not define apply\(\)"):
        Registry().register(bare)


def test_load_modules_calls_register(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registering, "seen", [])
    registry = Registry()
    registry.load_modules(["tests.support.registering", "tests.support.no_register"])
    assert registering.seen == [registry]
    assert registry.names() == ["test.loaded"]


def test_load_modules_bad_name_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_ORDER_TYPES"):
        Registry().load_modules(["tests.support.does_not_exist"])


def test_a_module_that_raises_on_import_or_in_register_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not only ImportError: a module whose own code raises (or whose register() does)
    was the raw exception and a traceback through the CLI; it is logged with its
    traceback once, then one ConfigurationError naming the module."""
    (tmp_path / "wm_raises_on_import.py").write_text("raise RuntimeError('broken module')\n")
    (tmp_path / "wm_raises_in_register.py").write_text(
        "def register(registry):\n    raise KeyError('oops')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for module, said in (
        ("wm_raises_on_import", "importing 'wm_raises_on_import' raised RuntimeError"),
        ("wm_raises_in_register", "wm_raises_in_register.register(registry) raised KeyError"),
    ):
        with pytest.raises(ConfigurationError, match="WORK_MANAGER_ORDER_TYPES") as raised:
            Registry().load_modules([module])
        assert said in raised.value.message
    assert sum(1 for r in caplog.records if r.exc_info) == 2  # each traceback logged once


def test_work_manager_loads_order_types_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registering, "seen", [])
    settings = Settings.from_env(
        {
            "WORK_MANAGER_DATABASE_URL": f"sqlite:///{tmp_path}/wm.db",
            "WORK_MANAGER_LEASE_BACKEND": "memory",
            "WORK_MANAGER_METRICS_DRIVER": "null",
            "WORK_MANAGER_ORDER_TYPES": "tests.support.registering, tests.support.no_register",
        }
    )
    wm = WorkManager(settings)
    try:
        assert "test.loaded" in wm.registry
        assert registering.seen == [wm.registry]
    finally:
        wm.close()


# --- public names -----------------------------------------------------------------------


def test_spec_public_names_importable_from_the_root() -> None:
    from workmanager import Diff, ItemSpec, OrderType, ValidationFailed, WorkManager  # noqa: F401


def test_all_matches_what_is_importable() -> None:
    public = {
        name
        for name in dir(workmanager)
        if not name.startswith("_") and not isinstance(getattr(workmanager, name), types.ModuleType)
    }
    assert set(workmanager.__all__) - {"__version__"} == public
    assert len(workmanager.__all__) == len(set(workmanager.__all__))
    for name in workmanager.__all__:
        assert getattr(workmanager, name) is not None


@pytest.mark.parametrize(
    ("module", "warned"),
    [
        ("tests.support.no_register", "has no register(registry) function"),
        ("tests.support.returns_types", "registered nothing: it returned them"),
    ],
)
def test_an_unknown_type_names_the_listed_modules_that_registered_nothing(
    module: str, warned: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A module listed with ``register_types`` (or a typo) for ``register``, or whose
    ``register`` returned its types instead of registering them, registered nothing: the
    unknown type's hint said to list the module, which was listed, and the servers said
    nothing at start (type authors' passes). Warned when loaded, named in the hint."""
    registry = Registry()
    with caplog.at_level("WARNING", logger="workmanager"):
        registry.load_modules([module])
    assert any(warned in m and module in m for m in caplog.messages), caplog.messages
    with pytest.raises(UnknownOrderType) as caught:
        registry.get("test.loaded")
    assert f"{module} registered nothing" in (caught.value.hint or "")


def test_a_strategy_without_a_name_is_reported_by_its_class() -> None:
    """It was reported as "allocator  failed" and ``strategy: ""``."""
    from workmanager.allocators import AllocatorStrategy, Generator

    class Broken(AllocatorStrategy):
        def discover(self) -> list[Any]:
            raise KeyError("boom")

    registry = Registry()
    registry.register_allocator(Broken())
    wm = WorkManager(Settings(database_url="sqlite://", metrics_driver="null"), registry=registry)
    try:
        report = Generator(wm.ctx, wm.orders).run(dry_run=True)
    finally:
        wm.close()
    assert [e["strategy"] for e in report.errors] == ["Broken"]


def test_an_unknown_type_is_named_at_most_200_characters() -> None:
    """A 2 MB type sent over Celery made a 4 MB log line (the name in the message and in
    the line around it); the message names its first 200 characters, details keep it."""
    from workmanager import Registry
    from workmanager.errors import UnknownOrderType

    with pytest.raises(UnknownOrderType) as refused:
        Registry().get("x" * 5000)
    assert len(refused.value.message) < 300 and "…" in refused.value.message
    assert refused.value.details == {"type": "x" * 5000}


class _Applies(OrderType):
    type = "test.hooks"

    def apply(self, order: Any, ctx: Any) -> Diff:
        return Diff.empty()


async def _async_apply(self: Any, order: Any, ctx: Any) -> Diff:
    return Diff.empty()


async def _async_plan(self: Any, order: Any) -> list[ItemSpec]:
    return [ItemSpec(input={})]


@pytest.mark.parametrize(
    ("attributes", "says"),
    [
        ({"apply": _async_apply}, "apply is async def"),
        ({"plan": _async_plan}, "plan is async def"),
        ({"can_approve": True}, "can_approve must be a method, got bool"),
        ({"result_schema": {"type": "object"}}, "result_schema must be a method, got dict"),
    ],
)
def test_a_hook_that_cannot_be_called_is_refused_at_registration(
    attributes: dict[str, Any], says: str
) -> None:
    """Found by an order-type authoring pass: ``async def apply`` registered, then every
    order failed after a person approved it (its coroutine never awaited); ``can_approve =
    True`` refused every approval ('bool' object is not callable). Said at start-up."""
    kind = type("Mistaken", (_Applies,), attributes)
    with pytest.raises(ConfigurationError, match=says) as refused:
        Registry([kind()])
    assert refused.value.hint


@pytest.mark.parametrize("name", ["docs.summarize ", " docs.summarize", "  ", "a\nb", "a\tb"])
def test_a_type_name_with_spaces_at_its_ends_or_controls_is_refused(name: str) -> None:
    """``type = "docs.summarize "`` registered; proposing ``docs.summarize`` was then
    "unknown (known: docs.summarize )", two names that looked the same."""
    kind = type("Spaced", (_Applies,), {"type": name})
    with pytest.raises(ConfigurationError, match="is not a type name"):
        Registry([kind()])


@pytest.mark.parametrize("name", ["ترجمه\u200cمتن", "rapport\u00a0annuel", "dev.👩\u200d💻"])
def test_a_type_name_in_any_script_is_taken(name: str) -> None:
    """A zero-width non-joiner (ordinary Persian spelling), a non-breaking space or an
    emoji sequence inside a name is no mistake (a review of the rule above)."""
    kind = type("Named", (_Applies,), {"type": name})
    assert name in Registry([kind()])


def test_a_module_that_replaces_a_type_is_not_said_to_register_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SPEC §4: re-registering a name replaces it; counting the types before and after
    said such a module registered nothing."""
    registry = Registry([Simple()])
    with caplog.at_level("WARNING", logger="workmanager"):
        registry.load_modules(["tests.support.returns_types", "tests.support.replaces_simple"])
    said = " ".join(caplog.messages)
    assert "returns_types" in said and "replaces_simple" not in said


def test_the_known_types_are_quoted() -> None:
    with pytest.raises(UnknownOrderType) as unknown:
        Registry([Simple()]).get("test.simpl")
    assert "(known: 'test.simple')" in unknown.value.message


def test_a_generate_run_stops_at_once_when_the_database_is_down() -> None:
    """An allocator pass: with the database down, each of 500 discovered requests was
    its own two-line failure (1,000 lines); the run ends with the one ``unavailable``
    error every command gives."""
    from workmanager.allocators import AllocatorStrategy, Generator, OrderRequest
    from workmanager.errors import Unavailable

    class Many(AllocatorStrategy):
        name = "many"

        def discover(self) -> list[OrderRequest]:
            return [OrderRequest("t", {}, dedupe_key=f"k{i}") for i in range(500)]

    registry = Registry()
    registry.register_allocator(Many())
    wm = WorkManager(Settings(database_url="sqlite://", metrics_driver="null"), registry=registry)
    calls: list[str] = []

    def down(*args: Any, **kwargs: Any) -> Any:
        calls.append("propose")
        raise Unavailable("database unavailable: connection refused\n\tIs the server running?")

    wm.orders.propose = down  # type: ignore[method-assign]
    try:
        with pytest.raises(Unavailable):
            Generator(wm.ctx, wm.orders).run()
    finally:
        wm.close()
    assert calls == ["propose"]
