"""laravel-work-manager's variables that are not one of this project's settings.

Upstream's ``config/work-manager.php`` (and its docs) read a few variables this project has
no setting of the same name for. None is ignored: each is honoured through its counterpart
(``WORK_MANAGER_MCP_CORS``, ``WORK_MANAGER_IDEMPOTENCY_TTL``, ``WORK_MANAGER_MCP_HTTP_AUTH``
when it says what happens anyway) or refused with one line naming it and what to use
instead. :func:`apply` runs on the raw values (environment over the file) after every
setting is parsed (settings.py calls it; the parsers are settings_values.py's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError
from .settings_values import PREFIX, parse_bool, whole_seconds

_TOKENS = (
    "the API and MCP authenticate bearer API tokens: create one with `workmanager tokens "
    "create` and send it as `Authorization: Bearer <token>`"
)

#: Upstream variables with no counterpart: refused with what to use instead.
REFUSED = {
    PREFIX + "MCP_STATIC_TOKENS": _TOKENS,
    PREFIX + "MCP_AUTH_GUARD": "there are no Laravel auth guards; " + _TOKENS,
    PREFIX + "GUARD": "there are no Laravel auth guards; " + _TOKENS,
    PREFIX + "DEBUG": (
        "there is no debug switch; errors are JSON envelopes and tracebacks go to the "
        "server's log (WORK_MANAGER_TRACING=console for request traces)"
    ),
}
#: Upstream variables honoured through a counterpart (see :func:`apply`).
HONOURED = (PREFIX + "MCP_CORS", PREFIX + "MCP_HTTP_AUTH", PREFIX + "IDEMPOTENCY_TTL")
NAMES = (*REFUSED, *HONOURED)


def _refuse(name: str, instead: str) -> ConfigurationError:
    """The value is not repeated: ``MCP_STATIC_TOKENS`` holds secrets."""
    return ConfigurationError(f"{name} is laravel-work-manager's and is not read here; {instead}")


def apply(env: Mapping[str, Any], from_file: Mapping[str, Any], values: dict[str, Any]) -> None:
    """Honour or refuse the upstream variables present in the environment or the file,
    adjusting the parsed ``values``. Where an upstream variable and its counterpart here
    are both set, the environment wins over the file, as for every setting."""
    raw = {**from_file, **env}
    for name, instead in REFUSED.items():
        if name in raw:
            raise _refuse(name, instead)
    if PREFIX + "MCP_HTTP_AUTH" in raw:
        _http_auth(raw[PREFIX + "MCP_HTTP_AUTH"], values.get("auth", "tokens"))
    if PREFIX + "MCP_CORS" in raw:
        # origins named in the environment are not cleared by a file's mcp_cors = false
        origins_win = PREFIX + "MCP_CORS_ORIGINS" in env and PREFIX + "MCP_CORS" not in env
        _cors(raw[PREFIX + "MCP_CORS"], values, keep_origins=origins_win)
    if PREFIX + "IDEMPOTENCY_TTL" in raw:
        hours = PREFIX + "IDEMPOTENCY_TTL_HOURS"
        # the hours win when set, unless only the file sets them and the environment
        # sets upstream's seconds
        hours_win = hours in env or (hours in from_file and PREFIX + "IDEMPOTENCY_TTL" not in env)
        _idempotency_ttl(raw[PREFIX + "IDEMPOTENCY_TTL"], values, hours_win)


def _http_auth(value: Any, auth: str) -> None:
    """``true`` is what happens with ``WORK_MANAGER_AUTH=tokens``; anything else is
    ``WORK_MANAGER_AUTH``'s to say (it covers the API and MCP alike)."""
    name = PREFIX + "MCP_HTTP_AUTH"
    wanted = parse_bool(name, value)
    if wanted and auth == "none":
        raise ConfigurationError(
            f"{name}=true contradicts WORK_MANAGER_AUTH=none: auth is one setting for the "
            "API and MCP here; set WORK_MANAGER_AUTH=tokens (or drop this variable)"
        )
    if not wanted and auth != "none":
        raise ConfigurationError(
            f"{name}=false: MCP auth is not switched off alone here; WORK_MANAGER_AUTH=none "
            "turns auth off for the API and MCP alike (local development only)"
        )


def _cors(value: Any, values: dict[str, Any], keep_origins: bool) -> None:
    """``false``: no CORS, whatever the origins; ``true``: the origins must be named
    (``WORK_MANAGER_MCP_CORS_ORIGINS``; upstream defaulted to ``*``)."""
    name = PREFIX + "MCP_CORS"
    if not parse_bool(name, value):
        if not keep_origins:
            values["mcp_cors_origins"] = ()
    elif not values.get("mcp_cors_origins"):
        raise ConfigurationError(
            f"{name}=true needs WORK_MANAGER_MCP_CORS_ORIGINS: expected the comma-separated "
            "origins allowed to call MCP from a browser (or * for any); here CORS is off "
            "unless origins are named"
        )


def _idempotency_ttl(value: Any, values: dict[str, Any], hours_win: bool) -> None:
    """Upstream's TTL in seconds; here ``WORK_MANAGER_IDEMPOTENCY_TTL_HOURS`` (which wins
    when ``hours_win``)."""
    name = PREFIX + "IDEMPOTENCY_TTL"
    try:
        seconds = whole_seconds(name, value)
    except ConfigurationError as exc:
        raise ConfigurationError(
            exc.message,
            hint="upstream's unit is seconds; here WORK_MANAGER_IDEMPOTENCY_TTL_HOURS takes hours",
        ) from None
    if not hours_win:
        values["idempotency_ttl_hours"] = seconds / 3600
