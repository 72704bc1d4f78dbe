"""workmanager: a work-order control plane for AI agents and background services.

The public names load on first use (PEP 562): importing a submodule (``workmanager.cli``,
``workmanager.client``) runs nothing of the others, so the command line's loading, Ctrl-C
included, is all its own (``cli/__init__.py``), and an agent on the HTTP client never
loads the database layer (SQLAlchemy: a third of a second and ~25 MiB)."""

import importlib as _importlib
import typing as _typing
from importlib.util import find_spec as _find_spec

if _typing.TYPE_CHECKING:
    from .container import WorkManager as WorkManager
    from .diff import Diff as Diff
    from .errors import (
        IllegalStateTransition as IllegalStateTransition,
    )
    from .errors import (
        LeaseConflict as LeaseConflict,
    )
    from .errors import (
        LeaseExpired as LeaseExpired,
    )
    from .errors import (
        NotFound as NotFound,
    )
    from .errors import (
        TransientError as TransientError,
    )
    from .errors import (
        ValidationFailed as ValidationFailed,
    )
    from .errors import (
        WorkManagerError as WorkManagerError,
    )
    from .order_types import (
        ItemSpec as ItemSpec,
    )
    from .order_types import (
        OrderType as OrderType,
    )
    from .order_types import (
        Part as Part,
    )
    from .registry import Registry as Registry
    from .settings import Settings as Settings
    from .states import (
        ItemState as ItemState,
    )
    from .states import (
        OrderState as OrderState,
    )
    from .types import (
        Actor as Actor,
    )
    from .types import (
        AgentInfo as AgentInfo,
    )
    from .types import (
        ApplyContext as ApplyContext,
    )
    from .types import (
        ItemView as ItemView,
    )
    from .types import (
        Lease as Lease,
    )
    from .types import (
        OrderView as OrderView,
    )

__version__ = "0.1.0"

#: Each public name and the module it lives in.
_HOMES = {
    "Actor": "types",
    "AgentInfo": "types",
    "ApplyContext": "types",
    "Diff": "diff",
    "IllegalStateTransition": "errors",
    "ItemSpec": "order_types",
    "ItemState": "states",
    "ItemView": "types",
    "Lease": "types",
    "LeaseConflict": "errors",
    "LeaseExpired": "errors",
    "NotFound": "errors",
    "OrderState": "states",
    "OrderType": "order_types",
    "OrderView": "types",
    "Part": "order_types",
    "Registry": "registry",
    "Settings": "settings",
    "TransientError": "errors",
    "ValidationFailed": "errors",
    "WorkManager": "container",
    "WorkManagerError": "errors",
}


def __getattr__(name: str) -> _typing.Any:
    """A public name, from its home module; or a submodule (``workmanager.errors`` after
    ``import workmanager``, as when this module imported them all)."""
    home = _HOMES.get(name)
    if home is not None:
        value = getattr(_importlib.import_module(f".{home}", __name__), name)
    elif not name.startswith("_") and _find_spec(f"{__name__}.{name}") is not None:
        value = _importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [*_HOMES, "__version__"]
