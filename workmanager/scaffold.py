"""Skeletons for new code: ``workmanager make order-type NAME [--parts] [--with-tests]`` and
``workmanager make allocator NAME`` (SPEC §9; upstream's make:order-type, make:allocator)."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ValidationFailed

_CLASS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_NAME = re.compile(r"^[a-z][a-z0-9_]*(?:[.-][a-z][a-z0-9_]*)*$")

_TEMPLATE = '''"""The ``{name}`` order type.

Register it in every process by naming this module in WORK_MANAGER_ORDER_TYPES
(``register(registry)`` below is called), or with ``registry.register({cls}())``.
"""

from __future__ import annotations

from workmanager import ApplyContext, Diff, ItemSpec, OrderType, OrderView, Registry
from workmanager.types import JSON, ItemView


class {cls}(OrderType):
    """TODO: say what one {name} order asks for and what applying it changes."""

    type = "{name}"
    auto_approve = False  # True: approve and apply as soon as every item is submitted

    def schema(self) -> JSON:
        """JSON Schema (draft 2020-12) of the order payload; failures are 422."""
        return {{
            "type": "object",
            "required": ["subject"],
            "properties": {{"subject": {{"type": "string", "minLength": 1}}}},
            "additionalProperties": False,
        }}

    def plan(self, order: OrderView) -> list[ItemSpec]:
        """Split the order into work items; one item per unit of agent work."""
        return [ItemSpec(input={{"subject": order.payload["subject"]}})]

    def result_schema(self, item: ItemView) -> JSON | None:
        """JSON Schema of an item's submitted result (None: no schema check)."""
        return {{"type": "object", "required": ["answer"]}}

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        """Make the change the order asked for. Must be idempotent: it may run again after a
        crash. Fence external writes with ``ctx.lease_tokens``."""
        after = {{i.input["subject"]: (i.result or {{}}).get("answer") for i in order.items}}
        return Diff(before={{}}, after=after, summary=f"{{len(after)}} answer(s) recorded")


def register(registry: Registry) -> None:
    registry.register({cls}())
'''


def class_name(name: str) -> str:
    """``customer.research`` → ``CustomerResearchOrder``."""
    words = re.split(r"[._-]+", name)
    return "".join(w[:1].upper() + w[1:] for w in words if w) + "Order"


def order_type_module(name: str) -> str:
    """The source of a module defining an OrderType subclass for ``name``, with ``schema``,
    ``plan``, ``result_schema`` and ``apply`` to fill in and a ``register`` function."""
    if not _NAME.match(name):
        raise ValidationFailed.at(
            "name",
            "an order type name is lowercase words joined by dots, e.g. customer.research",
            "pattern",
            f"{name!r} is not an order type name like customer.research",
        )
    return _TEMPLATE.format(name=name, cls=class_name(name))


_PARTS_HOOKS = '''
    # --- partial submissions: an agent sends parts, then finalizes ----------------------
    def required_parts(self, item: ItemView) -> list[str]:
        """Part keys ``finalize`` (strict mode) requires; default the item's plan list."""
        return list(item.parts_required)

    def part_schema(self, item: ItemView, part_key: str) -> JSON | None:
        """JSON Schema of one part's payload (None: no schema check); failures are 422 and
        the part is stored ``rejected`` with its errors."""
        return {{"type": "object", "required": ["text"]}}

    def validate_part(self, item: ItemView, part_key: str, payload: JSON, seq: int | None) -> None:
        """Custom check of a part that passed its schema; raise ValidationFailed."""

    def assemble(self, item: ItemView, parts: list[Part]) -> JSON:
        """The item's result from the latest validated part per key (``parts`` come sorted
        by key: join them in the plan's order)."""
        text = {{p.part_key: p.payload["text"] for p in parts}}
        return {{"answer": " ".join(text[key] for key in item.parts_required if key in text)}}

    def validate_assembled(self, item: ItemView, result: JSON) -> None:
        """Custom check of the assembled result; raise ValidationFailed."""
'''


def order_type_source(name: str, parts: bool = False) -> str:
    """:func:`order_type_module`, with ``parts``: items planned with required parts
    (``parts_required``) and the partial-submission hooks to fill in (``required_parts``,
    ``part_schema``, ``validate_part``, ``assemble``, ``validate_assembled``)."""
    source = order_type_module(name)
    if not parts:
        return source
    source = source.replace(
        'return [ItemSpec(input={"subject": order.payload["subject"]})]',
        'return [ItemSpec(input={"subject": order.payload["subject"]}, parts_required=PARTS)]',
    )
    source = source.replace(
        "from workmanager.types import JSON, ItemView\n",
        "from workmanager.order_types import Part\nfrom workmanager.types import JSON, ItemView\n"
        '\n#: the parts each item is built from, in order\nPARTS = ["intro", "body"]\n',
    )
    hooks = _PARTS_HOOKS.format()
    return source.replace("\n    def apply(", hooks + "\n    def apply(", 1)


_TEST_TEMPLATE = '''"""Tests of the ``{name}`` order type (made by ``workmanager make order-type
--with-tests``): an order proposed, planned, worked by an agent, approved and applied on
a throwaway SQLite database, in-process. Run with pytest."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from workmanager import Registry, Settings, WorkManager, ValidationFailed

MODULE = Path(__file__).resolve().parent / {module_path!r}


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("{module}", MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def wm(tmp_path: Path) -> Any:
    registry = Registry()
    _load().register(registry)
    url = f"sqlite:///{{tmp_path}}/wm.db"
    settings = Settings(database_url=url, lease_backend="database", metrics_driver="null")
    manager = WorkManager(settings, registry=registry)
    manager.db.create_all()
    yield manager
    manager.close()


def test_a_bad_payload_is_refused(wm: Any) -> None:
    with pytest.raises(ValidationFailed):
        wm.propose("{name}", {{}})


def test_an_order_goes_through(wm: Any) -> None:
    order_id = wm.propose("{name}", {{"subject": "example"}})
    lease = wm.agent.checkout("test-agent")
    assert lease is not None and lease.order_id == order_id
{work}
    wm.approve(order_id)
    wm.executor.apply(order_id)  # in production a Celery worker runs it after approval
    order = wm.queries.order(order_id)
    assert order["state"] == "completed", order
    assert order["diff"] is not None
'''

_WORK_WHOLE = """    wm.agent.submit(lease, {"answer": "42"})"""
_WORK_PARTS = """    wm.agent.submit_part(lease, "intro", {"text": "hello"})
    wm.agent.submit_part(lease, "body", {"text": "world"})
    wm.agent.finalize(lease)
    # assembled in the plan's order (PARTS), not the keys' sorted order
    assert wm.queries.item(lease.item_id)["result"] == {"answer": "hello world"}"""


def order_type_test(name: str, module_path: str, parts: bool = False) -> str:
    """A pytest module for the order type written to ``module_path`` (relative to the
    test file): a refused payload, and one order proposed, worked (whole or in parts),
    approved and applied."""
    module = re.sub(r"\W", "_", Path(module_path).stem)
    return _TEST_TEMPLATE.format(
        name=name,
        module=module,
        module_path=module_path,
        work=_WORK_PARTS if parts else _WORK_WHOLE,
    )


_ALLOCATOR_TEMPLATE = '''"""The ``{cls}`` allocator strategy: discovers work, proposes ``{type}``
orders.

``workmanager generate`` (and the beat task ``workmanager.orders.generate``, every 15
minutes) asks every registered strategy for order requests and proposes each one. Register
it in every process by naming this module in WORK_MANAGER_ORDER_TYPES (``register`` below).
"""

from __future__ import annotations

from workmanager import Registry
from workmanager.allocators import AllocatorStrategy, OrderRequest


class {cls}(AllocatorStrategy):
    """TODO: say where the work comes from."""

    name = "{strategy}"

    def discover(self) -> list[OrderRequest]:
        """The orders to propose now. Give each a dedupe_key: the same work discovered
        twice is one order."""
        subjects: list[str] = []  # TODO: look for work (a query, a feed, a directory, ...)
        return [
            OrderRequest("{type}", {{"subject": s}}, dedupe_key=f"{type}:{{s}}")
            for s in subjects
        ]


def register(registry: Registry) -> None:
    registry.register_allocator({cls}())
'''


def allocator_class_name(name: str) -> str:
    """``inbox`` → ``InboxAllocator``; ``InboxAllocator`` stays."""
    words = re.split(r"[._-]+", name)
    cls = "".join(w[:1].upper() + w[1:] for w in words if w)
    return cls if cls.endswith("Allocator") else cls + "Allocator"


def allocator_module(name: str, order_type: str | None = None) -> str:
    """The source of a module defining an AllocatorStrategy subclass named after ``name``
    that proposes ``order_type`` orders (``example.type`` by default, as upstream)."""
    cls = allocator_class_name(name)
    if not _CLASS.match(cls):
        raise ValidationFailed.at(
            "name",
            "letters, digits, dots, dashes",
            "pattern",
            f"{name!r} cannot name a Python class",
        )
    kind = order_type or "example.type"
    if not _NAME.match(kind):
        raise ValidationFailed.at(
            "type",
            "e.g. customer.research",
            "pattern",
            f"{kind!r} is not an order type name like customer.research",
        )
    strategy = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.removesuffix("Allocator")).lower()
    return _ALLOCATOR_TEMPLATE.format(cls=cls, type=kind, strategy=strategy or "allocator")
