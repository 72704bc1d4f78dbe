"""workmanager: a work-order control plane for AI agents and background services."""

import typing as _typing

from .diff import Diff
from .errors import (
    IllegalStateTransition,
    LeaseConflict,
    LeaseExpired,
    NotFound,
    TransientError,
    ValidationFailed,
    WorkManagerError,
)
from .order_types import ItemSpec, OrderType, Part
from .registry import Registry
from .settings import Settings
from .states import ItemState, OrderState
from .types import Actor, AgentInfo, ApplyContext, ItemView, Lease, OrderView

if _typing.TYPE_CHECKING:
    from .container import WorkManager

__version__ = "0.1.0"


def __getattr__(name: str) -> _typing.Any:
    """``WorkManager`` is imported on first use: it brings the database layer (SQLAlchemy,
    a third of a second and ~25 MiB), which code that only names the public types (an
    order-type module) or an agent on the HTTP client never needs."""
    if name == "WorkManager":
        from .container import WorkManager

        return WorkManager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "WorkManager"})


__all__ = [
    "Actor",
    "AgentInfo",
    "ApplyContext",
    "Diff",
    "IllegalStateTransition",
    "ItemSpec",
    "ItemState",
    "ItemView",
    "Lease",
    "LeaseConflict",
    "LeaseExpired",
    "NotFound",
    "OrderState",
    "OrderType",
    "OrderView",
    "Part",
    "Registry",
    "Settings",
    "TransientError",
    "ValidationFailed",
    "WorkManager",
    "WorkManagerError",
    "__version__",
]
