"""What the agents' HTTP client (:mod:`workmanager.client`) puts on the wire and reads
back: :class:`ApiError`, a body encoded as JSON or refused naming where it is not
(before anything is sent), an answer decoded or refused, a ``Retry-After`` bounded, and
the checks of what a client is made with (its URL, its headers, its keywords)."""

from __future__ import annotations

import json as jsonlib
import logging
import math
from typing import Any

import httpx

from .errors import ConfigurationError, UsageError, WorkManagerError, problem
from .jsonvalues import MAX_INT_DIGITS, too_long


class ApiError(WorkManagerError):
    """A call failed: the API answered with an error envelope (``code``, ``message``,
    ``details`` as the server sent them), or the client raised it itself with the code the
    server would have used: ``validation_failed`` (422) for a body that is not JSON, before
    anything is sent; ``unavailable`` (503) when the server could not be reached, the
    transport exception as ``__cause__``. An error answer that is not an error envelope (a
    proxy's HTML page) keeps its status, code ``http_error``, the start of its text in
    ``details["body"]``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            error = {}
        super().__init__(error.get("message") or f"HTTP {status}", details=error.get("details"))
        self.code = str(error.get("code") or "http_error")
        self.http_status = status


log = logging.getLogger("workmanager.client")


def say_unknown_type(exc: ApiError, warned: set[str]) -> None:
    """A checkout's ``no_items_available`` for a type the server registers none of (its
    ``details.known_types`` without it: a typo polls an empty queue for ever), said once
    per type as a warning; an item type a plan set itself may still be right, so the
    answer stays "nothing to lease"."""
    details = exc.details if isinstance(exc.details, dict) else {}
    asked, known = details.get("type"), details.get("known_types")
    if not isinstance(asked, str) or not isinstance(known, list) or asked in warned:
        return
    warned.add(asked)
    listed = ", ".join(map(str, known)) or "none"
    log.warning("checkout: the server registers no order type %r (known: %s)", asked, listed)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


#: How much of an answer that is not JSON an :class:`ApiError` quotes.
BODY_EXCERPT = 500


def _json_problem(value: Any, path: str, ancestors: frozenset[int]) -> tuple[str, str] | None:
    """The first value under ``value`` that JSON cannot encode: ``(path, why)``; paths are
    written as the server writes them (``result.when``, ``result.items[2]``)."""
    where = path or "$"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, f"{value} is not valid JSON")
    if isinstance(value, int):
        long_ = too_long(value)
        return (where, f"an integer of more than {MAX_INT_DIGITS} digits") if long_ else None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return where, f"the string is not valid UTF-8 ({exc.reason})"
        return None
    if not isinstance(value, (dict, list, tuple)):
        return where, f"a value of type {type(value).__name__} is not JSON serializable"
    if id(value) in ancestors:
        return where, "circular reference"
    return _member_problem(value, path, ancestors | {id(value)})


def _member_problem(
    value: dict[Any, Any] | list[Any] | tuple[Any, ...], path: str, ancestors: frozenset[int]
) -> tuple[str, str] | None:
    if not isinstance(value, dict):
        for i, item in enumerate(value):
            found = _json_problem(item, f"{path}[{i}]", ancestors)
            if found:
                return found
        return None
    for key, item in value.items():
        if not isinstance(key, str):  # the server's rule (workmanager.jsonvalues)
            return path or "$", f"key {key!r} of type {type(key).__name__} is not a string"
        found = _json_problem(item, f"{path}.{key}" if path else str(key), ancestors)
        if found:
            return found
    return None


def encode_json(value: Any) -> bytes:
    """``value`` as httpx would send it; :class:`ApiError` ``validation_failed`` naming
    where and why when it is not JSON (a datetime, a set, NaN, a cycle...)."""
    try:
        # json.dumps writes a key 1 as "1" without a word: look first, as the server does
        found = _json_problem(value, "", frozenset())
    except RecursionError:
        found = None
    try:
        if found is not None:
            raise TypeError(found[1])
        return jsonlib.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        path, why = found or ("$", f"{type(exc).__name__}: {exc}")
        message = f"the request body is not JSON: {path}: {why}"
        details = [problem(path, why, "json")]
        raise ApiError(422, error_body("validation_failed", message, details)) from exc


def seconds_arg(call: str, name: str, value: Any, least: float, most: float) -> float | None:
    """A number of seconds given to a client call (``None``: not given), checked before
    anything is sent: a real, finite number from ``least`` to ``most``, else :class:`ApiError`
    ``validation_failed`` (NaN made a heartbeat thread beat without pause, ``1e308`` ended
    it, a string raised after the checkout had leased the item)."""
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and math.isfinite(value) and least <= value <= most:
        return float(value)
    why = f"{name} must be a number of seconds from {least:g} to {most:g}, not {value!r}"
    details = [problem(name, why, "range" if number else "type")]
    raise ApiError(422, error_body("validation_failed", f"{call}: {why}", details))


#: The longest wait a ``Retry-After`` header may ask for between the client's tries.
MAX_RETRY_AFTER_SECONDS = 60.0


def retry_after(response: httpx.Response) -> float:
    """The wait a 503 asks for, in seconds: finite, 0 to :data:`MAX_RETRY_AFTER_SECONDS`
    (``nan`` or ``1e9`` from a proxy is no reason to sleep for ever); 1 s when the header
    is an HTTP date or not a number."""
    try:
        wait = float(response.headers.get("Retry-After", "1"))
    except ValueError:  # an HTTP date, or garbage from a proxy
        return 1.0
    return min(max(wait, 0.0), MAX_RETRY_AFTER_SECONDS) if math.isfinite(wait) else 1.0


def decode(response: httpx.Response, expect: str | None = None) -> dict[str, Any]:
    """The answer's JSON object (an error answer's: its error envelope), holding
    ``expect`` when given (or a replay's ``"replayed"``); otherwise an :class:`ApiError`
    quoting the start of the answer. Every success of the API is a JSON object: an empty
    2xx or a redirect (a proxy's, an http→https move) counted as one, and a submit that
    never arrived ended its lease as if it had."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an empty answer
        body = exc
    if 200 <= status < 300 and isinstance(body, dict):
        if expect is None or expect in body or body.get("replayed") is True:
            return body
        message = f"HTTP {status}: the answer has no {expect!r}"
        details = {"body": response.text[:BODY_EXCERPT]}
        raise ApiError(502, error_body("invalid_response", message, details))
    if 300 <= status < 400:
        where = response.headers.get("Location")
        message = f"HTTP {status}: the server answered a redirect to {where!r}, not the API"
        details = {"location": where, "hint": "set the client's base URL to where it points"}
        raise ApiError(502, error_body("invalid_response", message, details))
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        raise ApiError(status, body)
    if isinstance(body, Exception):
        kind = "empty" if not response.content else "not JSON"
    else:
        kind = "not an error envelope" if status >= 400 else "not a JSON object"
    details = {
        "content_type": response.headers.get("Content-Type"),
        "body": response.text[:BODY_EXCERPT],
    }
    if status >= 400:
        message = f"HTTP {status} {response.reason_phrase}: the answer is {kind}"
        error = ApiError(status, error_body("http_error", message, details))
    else:
        message = f"HTTP {status}: the answer is {kind}"
        error = ApiError(502, error_body("invalid_response", message, details))
    if isinstance(body, Exception) and response.content:
        raise error from body
    raise error


def check_base_url(base_url: Any) -> None:
    """An ``http(s)://host[:port]`` URL, refused at construction (a URL without its scheme
    was three retried tries and then ``unavailable``, as if the server were down)."""
    try:
        parsed = httpx.URL(base_url) if isinstance(base_url, str) else None
    except httpx.InvalidURL:  # "http://[::1", a port that is not a number
        parsed = None
    port = parsed.port if parsed is not None else None
    if (
        parsed is None
        or parsed.scheme not in ("http", "https")
        or not parsed.host
        or not (port is None or 1 <= port <= 65535)
    ):
        raise ConfigurationError(
            f"WorkClient: base_url must be an http(s) URL such as http://127.0.0.1:8000,"
            f" got {base_url!r}",
            hint="the server's address, as `workmanager serve` prints it",
        )


#: The constructor's parameter behind each header, for its refusal.
HEADER_PARAMS = {
    "Authorization": "token",
    "X-Agent-ID": "agent_id",
    "X-Agent-Name": "agent_name",
    "X-Agent-Version": "agent_version",
    "X-Model-Name": "model_name",
    "X-Runtime": "runtime",
}


def check_header(name: str, value: Any) -> None:
    """What the client sends about itself travels in HTTP headers (a newline raised from
    inside httpx, or was retried as an outage): the token in printable ASCII, the names
    in printable text, sent as UTF-8 (httpx encodes a ``str`` as ASCII only), which the
    server reads."""
    if value is None:
        return
    text = isinstance(value, str) and value.isprintable()
    if not text or (name == "Authorization" and not value.isascii()):
        what = HEADER_PARAMS.get(name, name)
        kind = "printable ASCII" if name == "Authorization" else "printable text"
        raise ConfigurationError(
            f"WorkClient: {what} must be {kind} (it is sent as the {name} header),"
            f" got {value if name != 'Authorization' else '<the token>'!r}",
            hint="remove line breaks and control characters",
        )


#: The keyword arguments each call takes beside its own (sent in the body).
PROPOSE_FIELDS = frozenset({"meta", "priority", "dedupe_key", "tenant_id"})
CHECKOUT_FILTERS = frozenset({"type", "min_priority", "tenant_id"})


def known_keywords(call: str, given: dict[str, Any], known: frozenset[str]) -> None:
    """A misspelled keyword is refused, not sent for the server to ignore (a checkout
    filter ``typ=`` leased an item of any type)."""
    unknown = sorted(set(given) - known)
    if unknown:
        raise UsageError(
            f"{call}() got an unknown keyword {unknown[0]!r}",
            hint=f"{call}() takes {', '.join(sorted(known))}",
        )
