"""Example order types used by the demo, the docs and the tests.

``demo.research`` — an agent researches a company and returns facts; auto-approved; apply
records the facts into a profile (a pure diff here; a real type would write to a system of
record, fenced with ``ctx.lease_tokens``).
"""

from __future__ import annotations

from workmanager import ApplyContext, Diff, ItemSpec, OrderType, OrderView, Registry
from workmanager.types import JSON, ItemView


class ResearchOrder(OrderType):
    type = "demo.research"
    auto_approve = True

    def schema(self) -> JSON:
        return {
            "type": "object",
            "required": ["company"],
            "properties": {
                "company": {"type": "string", "minLength": 1},
                "questions": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                "tenant_id": {"type": "string"},
            },
            "additionalProperties": False,
        }

    def plan(self, order: OrderView) -> list[ItemSpec]:
        questions = order.payload.get("questions") or ["overview"]
        return [
            ItemSpec(input={"company": order.payload["company"], "question": q}) for q in questions
        ]

    def result_schema(self, item: ItemView) -> JSON:
        return {
            "type": "object",
            "required": ["answer"],
            "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
        }

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        answers = {i.input["question"]: (i.result or {}).get("answer") for i in order.items}
        return Diff(
            before={},
            after={"company": order.payload["company"], **answers},
            summary=f"profile of {order.payload['company']}: {len(answers)} fact(s)",
        )


def register(registry: Registry) -> None:
    registry.register(ResearchOrder())
