"""The registry of order types, and loading of ``WORK_MANAGER_ORDER_TYPES`` modules."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator
from functools import partial

from .allocators import AllocatorStrategy, strategy_name
from .errors import ConfigurationError, UnknownOrderType
from .importing import call_user_hook, import_module
from .order_types import ATTEMPTS_RULE, TYPE_NAME_RULE, OrderType, is_attempts, is_type_name
from .schema import check_schema

log = logging.getLogger("workmanager")

VARIABLE = "WORK_MANAGER_ORDER_TYPES"
HINT = "a comma-separated list of modules, e.g. myapp.types; is their package on PYTHONPATH?"


class Registry:
    """Order types by name. Re-registering a name replaces the earlier type."""

    def __init__(self, types: Iterable[OrderType] = ()) -> None:
        self._types: dict[str, OrderType] = {}
        self._known: tuple[str, ...] | None = None
        self._allocators: dict[str, AllocatorStrategy] = {}
        #: modules listed in WORK_MANAGER_ORDER_TYPES without a ``register(registry)``
        self._unregistering: list[str] = []
        #: types and allocators registered since a module's register() was called
        self._registered = 0
        for order_type in types:
            self.register(order_type)

    def register(self, order_type: OrderType) -> OrderType:
        """Add ``order_type``; its payload schema is checked now, so a broken one stops the
        process at start-up rather than failing every propose."""
        if isinstance(order_type, type) and issubclass(order_type, OrderType):
            raise ConfigurationError(
                f"{order_type.__name__} is an OrderType class: register an instance",
                hint=f"registry.register({order_type.__name__}())",
            )
        if not isinstance(order_type, OrderType) or not order_type.type:
            raise ConfigurationError(f"{order_type!r} is not an OrderType with a `type` name")
        _check_declared(order_type)
        schema = order_type.schema()
        if schema is not None:
            check_schema(schema, f"order type {order_type.type!r}, schema()")
        if type(order_type).apply is OrderType.apply:  # every approved order would fail
            raise ConfigurationError(
                f"order type {order_type.type!r} ({type(order_type).__name__}) does not"
                " define apply()",
                hint="define apply(self, order, ctx) returning a Diff (SPEC §4: every hook"
                " but `type` and `apply` is optional)",
            )
        self._types[order_type.type] = order_type
        self._known = None
        self._registered += 1
        return order_type

    def get(self, name: str) -> OrderType:
        try:
            return self._types[name]
        except KeyError:
            known = ", ".join(repr(n) for n in sorted(self._types)) or "none registered"
            hint = (
                f"known types: {known}"
                if self._types
                else "no order type is registered: list the modules that register them in"
                " WORK_MANAGER_ORDER_TYPES"
            )
            if self._unregistering:  # a register_types() or a typo: the module is listed
                hint += (
                    f"; {', '.join(self._unregistering)} registered nothing (no"
                    " register(registry) function, or one that called no registry.register)"
                )
            raise UnknownOrderType(
                f"unknown order type {_shown(name)} (known: {known})",
                details={"type": name},
                hint=hint,
            ) from None

    def register_allocator(self, strategy: AllocatorStrategy) -> AllocatorStrategy:
        """Add an allocator strategy; re-registering a name replaces it. A class (not an
        instance) or a ``discover`` that is no plain method is refused here, not at every
        generate run."""
        if isinstance(strategy, type):
            raise ConfigurationError(
                f"{strategy.__name__} is an allocator class: register an instance",
                hint=f"registry.register_allocator({strategy.__name__}())",
            )
        _check_hook(strategy, f"allocator {strategy_name(strategy)!r}", "discover")
        self._allocators[strategy_name(strategy)] = strategy
        self._registered += 1
        return strategy

    def allocators(self) -> list[AllocatorStrategy]:
        return list(self._allocators.values())

    def names(self) -> list[str]:
        return sorted(self._types)

    def known(self) -> tuple[str, ...]:
        """:meth:`names` as a tuple, kept until a type is registered (each checkout asks)."""
        if self._known is None:
            self._known = tuple(self.names())
        return self._known

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[OrderType]:
        return iter(list(self._types.values()))

    def load_modules(self, modules: Iterable[str]) -> None:
        """Import each module and call its ``register(registry)`` when it has one."""
        for name in modules:
            module = import_module(name, VARIABLE, HINT)
            register = getattr(module, "register", None)
            if not callable(register):
                self._unregistering.append(name)
                log.warning(
                    "%s: %s has no register(registry) function, so nothing of it is"
                    " registered (a typo, or register_types()?)",
                    VARIABLE,
                    name,
                )
                continue
            self._registered = 0
            said = call_user_hook(partial(register, self), f"{name}.register(registry)", VARIABLE)
            if not self._registered:  # a re-registered name counts (it replaces: SPEC §4)
                self._unregistering.append(name)
                log.warning(
                    "%s: %s.register(registry) registered nothing%s",
                    VARIABLE,
                    name,
                    ": it returned them; call registry.register(t) for each" if said else "",
                )


def _check_declared(order_type: OrderType) -> None:
    """The type's declared attributes, as the services read them: a name the columns
    store, flags that are booleans (a method or the string ``"false"`` is truthy: every
    order would approve and apply itself, unreviewed), and a ``max_attempts`` items can
    carry. Wrong ones stop the process at start-up, naming the type and the attribute."""
    name = order_type.type
    cls = type(order_type).__name__
    if not is_type_name(name):
        raise ConfigurationError(
            f"{cls}.type {name!r:.80} is not a type name: it must be {TYPE_NAME_RULE}",
            hint='e.g. type = "acme.research" (make order-type NAME writes one)',
        )
    for flag in ("auto_approve", "requires_evidence"):
        value = getattr(order_type, flag)
        if not isinstance(value, bool):
            hint = (
                "auto_approve is a class attribute, True or False; a decision per order"
                " (upstream's shouldAutoApprove()) goes in can_approve(order), with"
                " auto_approve = True"
                if flag == "auto_approve"
                else f"{flag} = True or False"
            )
            raise ConfigurationError(
                f"order type {name!r}: {flag} must be True or False, got"
                f" {type(value).__name__} {value!r:.60}",
                hint=hint,
            )
    for hook in HOOKS:
        _check_hook(order_type, f"order type {name!r}", hook)
    attempts = order_type.max_attempts
    if attempts is not None and not is_attempts(attempts):
        raise ConfigurationError(
            f"order type {name!r}: max_attempts must be {ATTEMPTS_RULE} or None, got"
            f" {attempts!r:.40}",
            hint="None takes WORK_MANAGER_DEFAULT_MAX_ATTEMPTS",
        )


#: The methods the services call on an order type (synchronously, on worker threads):
#: the base class's public ones, so a hook added there is checked too.
HOOKS = tuple(n for n, v in vars(OrderType).items() if callable(v) and not n.startswith("_"))


def _check_hook(owner: object, label: str, hook: str) -> None:
    """A hook the services can call: a method, not a value (``can_approve = True`` refused
    every approval, 'bool' object is not callable) and not ``async def`` (its coroutine was
    never awaited: every plan refused, every apply failed after a person approved)."""
    value = getattr(owner, hook, None)
    if not callable(value):
        raise ConfigurationError(
            f"{label}: {hook} must be a method, got {type(value).__name__}",
            hint=f"def {hook}(self, ...) (SPEC §4); a per-order decision is a method's answer",
        )
    if inspect.iscoroutinefunction(value) or inspect.isasyncgenfunction(value):
        raise ConfigurationError(
            f"{label}: {hook} is async def, and hooks are called synchronously",
            hint=f"make {hook} a plain def (run async work inside it with asyncio.run)",
        )


def untold(exc: UnknownOrderType) -> UnknownOrderType:
    """``exc`` as told to a reader who does not see the deployment's types (a token bound
    to a tenant: ``surface.no_items.sees_types``; a refusal recorded in a tenant)."""
    name = (exc.details or {}).get("type")
    return UnknownOrderType(f"unknown order type {_shown(name)}", details={"type": name})


def _shown(name: object) -> str:
    """An order type's name in a message: its first 200 characters (a 2 MB type sent over
    Celery made 4 MB log lines)."""
    return repr(name) if len(str(name)) <= 200 else f"{str(name)[:200]!r}…"
