"""Proposals: what one must be and the order its type plans (the record of a refused one
is :mod:`.refusals`').

:func:`check_proposal` is checked before anything is stored (``OrderService.propose`` and
the producer API, ``tasks.enqueue_order``, when its process has the order types loaded,
run the same check). :func:`build_order` builds the order and the items its type plans for
it, not stored: both order stores' ``create_order`` (the ORM's in
:mod:`workmanager.db.orm_orders`, one statement on PostgreSQL in
:mod:`workmanager.db.postgres.control`) take what it returns. A repeated dedupe key stands
for its order only for the same proposal (:func:`same_proposal`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from ..checks import guarded
from ..db.models import Item, Order
from ..errors import (
    DedupeKeyReused,
    PayloadTooLarge,
    ValidationFailed,
    problem,
)
from ..jsonvalues import canonical, json_fields, json_value, readable
from ..order_types import (
    ATTEMPTS_RULE,
    TYPE_NAME_RULE,
    ItemSpec,
    OrderType,
    is_attempts,
    is_type_name,
)
from ..registry import Registry
from ..schema import validate
from ..settings import Settings
from ..states import ItemState, OrderState
from ..types import JSON, Actor
from .inputs import PRIORITY_RANGE, require
from .parts import PART_KEYS_RULE, part_keys
from .tokens import order_tenant
from .views import order_view

#: Orders proposed with a dedupe key get the id uuid5(DEDUPE_NAMESPACE, key), so a producer
#: that enqueues asynchronously knows the id of the (possibly existing) order at once.
DEDUPE_NAMESPACE = uuid.UUID("6f1d3c0e-9a53-4f0e-8d1e-5d6c2b7a9e41")


def order_id_for(dedupe_key: str | None) -> uuid.UUID:
    """The id an order gets: derived from its dedupe key when it has one, else random."""
    return uuid.uuid5(DEDUPE_NAMESPACE, dedupe_key) if dedupe_key else uuid.uuid4()


def keyed_id(dedupe_key: Any) -> uuid.UUID | None:
    """The order id a dedupe key names; ``None`` for what cannot be a key (not text,
    empty, or with a NUL or a lone surrogate, which no UTF-8 encoder takes): a refusal
    sent by a worker records such a proposal under another id, not a traceback."""
    if not isinstance(dedupe_key, str) or not dedupe_key or readable(dedupe_key) != dedupe_key:
        return None
    return order_id_for(dedupe_key)


def build_order(
    settings: Settings,
    order_type: OrderType,
    payload: JSON,
    *,
    priority: int,
    meta: JSON,
    dedupe_key: str | None,
    actor: Actor,
    order_id: uuid.UUID | None,
    now: datetime,
    tenant_id: str | None = None,
) -> tuple[Order, list[Item]]:
    """The new order and its planned items, not yet stored. The order belongs to
    ``tenant_id`` (when none is given, to its payload's ``tenant_id`` key, as items were
    given a tenant before orders had one); its items inherit it."""
    order = Order(
        id=order_id or order_id_for(dedupe_key),
        type=order_type.type,
        state=OrderState.QUEUED.value,
        priority=priority,
        payload=payload,
        meta=meta,
        requested_by_type=actor.type,
        requested_by_id=actor.id,
        dedupe_key=dedupe_key,
        tenant_id=order_tenant(tenant_id, payload),
        apply_attempts=0,
        created_at=now,
        updated_at=now,
        last_transitioned_at=now,
    )
    specs = _planned(settings, order_type, order)
    # Items are created "at the same time", but listings and checkout order by
    # created_at: one microsecond apart keeps the order plan() gave them.
    items = [
        _item(settings, order, order_type, spec, now + timedelta(microseconds=n))
        for n, spec in enumerate(specs)
    ]
    # An order with no items could never be submitted: it would sit queued forever.
    require(bool(items), "payload", "the order type planned no items for it", "plan")
    _check_size(settings, payload, meta, specs)
    return order, items


def _planned(settings: Settings, order_type: OrderType, order: Order) -> list[ItemSpec]:
    """What ``plan()`` gives, read up to one past ``max_items_per_order`` (a generator
    that never ends is not read for ever); a hook that raises while it is read, or
    returns something that is not a list of specs, is the type's ``hook_error``."""
    limit = settings.max_items_per_order
    planned = lambda: list(islice(order_type.plan(order_view(order, [])), limit + 1))  # noqa: E731
    specs = guarded(planned, "plan", "plan()")
    if len(specs) > limit:
        raise PayloadTooLarge(
            f"the order type planned more than {limit} items for this order"
            " (WORK_MANAGER_MAX_ITEMS_PER_ORDER)",
            details={"limit": limit, "setting": "WORK_MANAGER_MAX_ITEMS_PER_ORDER"},
        )
    return specs


def _check_size(settings: Settings, payload: JSON, meta: JSON, specs: list[ItemSpec]) -> None:
    """An order as stored, its payload, meta and every item's input (an item planned
    without one stores a copy of the payload), is at most ``max_order_bytes`` of
    canonical JSON. (A Celery message has no body limit: a 260 MB meta went on to
    PostgreSQL, which refused it.)"""
    limit = settings.max_order_bytes
    copy = len(canonical(payload))
    size = copy + len(canonical(meta))
    for spec in specs:
        size += copy if spec.input is None else len(canonical(spec.input))
        if size > limit:
            raise PayloadTooLarge(
                f"the order (payload and meta) and the inputs of its {len(specs)} planned"
                f" items come to more"
                f" than {limit} bytes (WORK_MANAGER_MAX_ORDER_BYTES)",
                details={"limit": limit, "setting": "WORK_MANAGER_MAX_ORDER_BYTES"},
            )


def _item(
    settings: Settings, order: Order, order_type: OrderType, spec: ItemSpec, now: datetime
) -> Item:
    if not isinstance(spec, ItemSpec):
        raise ValidationFailed.at(
            "plan",
            f"plan() must return ItemSpec objects, got {spec!r}",
            "hook_error",
            "the order type's plan() returned something else than ItemSpec objects",
        )
    parts_required = _checked_spec(spec, settings.max_parts_per_item)
    json_value(spec.input, "plan.input")
    max_attempts = spec.max_attempts or order_type.max_attempts or settings.default_max_attempts
    return Item(
        id=uuid.uuid4(),
        order_id=order.id,
        type=spec.type or order.type,
        order_type=order.type,
        priority=order.priority,
        tenant_id=order.tenant_id,
        state=ItemState.QUEUED.value,
        input=dict(order.payload) if spec.input is None else dict(spec.input),
        max_attempts=max_attempts,
        parts_required=parts_required,
        attempts=0,
        lease_token=0,
        created_at=now,
        updated_at=now,
    )


def _checked_spec(spec: ItemSpec, max_parts: int) -> list[str] | None:
    """The fields of an :class:`ItemSpec` as the items store them, its part keys as a
    list (any iterable of them: a list, a tuple, a generator): a wrong field was stored
    as given, changed (``parts_required="abc"`` became three parts, ``max_attempts=0`` the
    default) or refused by the driver, differently on each database. More required parts
    than an item may hold (``max_parts``) could never be finalized strictly."""
    found = []
    if spec.input is not None and not isinstance(spec.input, dict):
        found.append(("input", f"an object or None, got {type(spec.input).__name__}"))
    if spec.type is not None and not is_type_name(spec.type):
        found.append(("type", f"{TYPE_NAME_RULE} or None"))
    if spec.max_attempts is not None and not is_attempts(spec.max_attempts):
        found.append(("max_attempts", f"{ATTEMPTS_RULE} or None"))
    keys = spec.parts_required
    listed = None if keys is None else part_keys(keys)
    if keys is not None and listed is None:
        found.append(("parts_required", f"{PART_KEYS_RULE} or None"))
    elif listed is not None and len(listed) > max_parts:
        found.append(
            ("parts_required", f"at most WORK_MANAGER_MAX_PARTS_PER_ITEM ({max_parts}) keys")
        )
    if found:
        raise ValidationFailed(
            [problem(f"plan.{field}", f"must be {why}", "hook_error") for field, why in found],
            "the order type's plan() returned an ItemSpec whose fields cannot be stored",
        )
    return listed or None


def check_proposal(
    registry: Registry,
    type: str,
    payload: Any,
    *,
    priority: Any = 0,
    meta: Any = None,
    dedupe_key: Any = None,
    requested_by: Actor | None = None,
    max_depth: int,
) -> OrderType:
    """The order type of a valid proposal; else :class:`UnknownOrderType`,
    :class:`ValidationFailed` (with ``details``) or :class:`MalformedJSON`."""
    order_type = registry.get(type)
    check_request(
        payload, priority=priority, meta=meta, dedupe_key=dedupe_key,
        requested_by=requested_by, max_depth=max_depth,
    )  # fmt: skip
    validate(guarded(order_type.schema, "payload", "schema()"), payload, "payload")
    return order_type


def check_request(
    payload: Any,
    *,
    priority: Any = 0,
    meta: Any = None,
    dedupe_key: Any = None,
    requested_by: Actor | None = None,
    max_depth: int,
) -> None:
    """What :func:`check_proposal` checks whatever the order type is (the rest, the type
    and its payload schema, changes with a deploy)."""
    requester = None if requested_by is None else requested_by.id
    require(
        requester is None or (isinstance(requester, str) and 0 < len(requester) <= 191),
        "requested_by_id",
        "must be a string of 1 to 191 characters",
    )
    require(isinstance(payload, dict), "payload", "must be an object")
    require(meta is None or isinstance(meta, dict), "meta", "must be an object")
    check_priority(priority)
    require(
        dedupe_key is None or (isinstance(dedupe_key, str) and 0 < len(dedupe_key) <= 191),
        "dedupe_key",
        "must be a string of 1 to 191 characters",
    )
    proposed = {"payload": payload, "meta": meta, "dedupe_key": dedupe_key}
    json_fields({**proposed, "requested_by_id": requester}, max_depth)


def check_priority(priority: Any) -> None:
    """A priority is an integer a column holds; else :class:`ValidationFailed` at it (a
    producer checks it even without the order types: a 5,000-digit one raised out of
    Celery's encoder)."""
    require(
        storable_int(priority),
        "priority",
        f"must be an integer from {PRIORITY_RANGE.start} to {PRIORITY_RANGE.stop - 1}",
    )


def storable_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in PRIORITY_RANGE


def same_proposal(
    found: dict[str, Any], type: str, payload: JSON, key: str | None, tenant: str | None
) -> None:
    """A repeated dedupe key (or order id) stands for the order it made only when the
    proposal is the same: same type, same payload (compared as JSON, so ``1`` is not
    ``true``), same tenant. Anything else would hand one caller another's order (dedupe
    keys are global: a key used in another tenant is refused without showing its order)."""
    same = found["type"] == type and found.get("tenant_id") == tenant
    if same and canonical(found["payload"]) == canonical(payload):
        return
    named = f"dedupe key {key!r}" if key else f"order id {found['id']}"
    raise DedupeKeyReused(
        f"{named} already names an order of another type, payload or tenant",
        details={"dedupe_key": key} if key else None,
    )


def proposed_id(order_id: uuid.UUID | str | None) -> uuid.UUID | None:
    """The id a producer chose for its order: a UUID or its text (a string was stored as
    it was on PostgreSQL and failed in SQLite's driver; anything else in the driver)."""
    if order_id is None or isinstance(order_id, uuid.UUID):
        return order_id
    if isinstance(order_id, str):
        try:
            return uuid.UUID(order_id)
        except ValueError:
            pass
    raise ValidationFailed.at("order_id", f"must be a UUID, got {order_id!r:.60}", "format")
