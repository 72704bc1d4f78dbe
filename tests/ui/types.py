"""Order types for the review console's tests, loaded by the Celery workers too
(WORK_MANAGER_ORDER_TYPES=tests.ui.types).

``ui.title`` sets a document's title: one item per document, reviewed by a person (no
auto-approval); apply returns the title before and after, and ``preview`` says so before
approval. ``ui.plain`` has no preview. ``ui.failing`` is ``ui.title`` whose apply always
raises; ``ui.parts`` is one item assembled from parts ``a`` and ``b``.
"""

from __future__ import annotations

from workmanager import ApplyContext, Diff, ItemSpec, Lease, OrderType, OrderView, Registry
from workmanager.types import JSON, ItemView


def _diff(order: OrderView) -> Diff:
    before = {doc: f"untitled {doc}" for doc in order.payload.get("docs", [])}
    after = dict(before)
    for item in order.items:
        if item.result is not None:
            after[item.input["doc"]] = item.result.get("title")
    return Diff(before, after, f"{len(order.items)} title(s) set")


class Titles(OrderType):
    type = "ui.title"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        return [ItemSpec(input={"doc": doc}) for doc in order.payload.get("docs", [])]

    def preview(self, order: OrderView) -> Diff | None:
        if "boom" in order.payload.get("docs", []):
            raise KeyError("boom")  # a bug in the type's preview: the page still renders
        if "dict" in order.payload.get("docs", []):
            return {"after": 1}  # type: ignore[return-value]  # not a Diff: a 500 before
        if "deep" in order.payload.get("docs", []):
            nested: dict[str, object] = {}
            for _ in range(5000):  # past what the page's JSON takes: a 500 before
                nested = {"n": nested}
            return Diff({}, nested, "deep")
        return _diff(order)

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return _diff(order)


class Plain(OrderType):
    type = "ui.plain"

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff({}, {"done": True}, "done")


class FailingTitles(Titles):
    type = "ui.failing"

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        raise RuntimeError("downstream down")


class Parts(OrderType):
    type = "ui.parts"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        return [ItemSpec(input={}, parts_required=["a", "b"])]

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


def register(registry: Registry) -> None:
    registry.register(Titles())
    registry.register(Plain())
    registry.register(Parts())


def title_handler(item: ItemView, lease: Lease) -> JSON:
    """The agent: a title for the document."""
    return {"title": f"A title for {item.input['doc']}"}
