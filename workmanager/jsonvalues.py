"""Strict JSON: what can be stored in a JSON column on every backend.

Python's ``json`` accepts ``NaN``/``Infinity`` and any string; PostgreSQL's jsonb refuses
non-finite numbers and NUL characters, SQLite stores them and then nothing can render
them again. Values are checked once, at the edge, so nothing unstorable gets in.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from itertools import accumulate
from typing import Any

from .errors import MAX_DETAILS, MalformedJSON, ValidationFailed, problem

#: Containers nested deeper than this are refused (``WORK_MANAGER_MAX_JSON_DEPTH``), and the
#: setting cannot go above the ceiling: past it, recursive code further in (JSON Schema
#: validation, pydantic's serialiser, ``json``'s C parser) runs out of stack.
DEFAULT_MAX_JSON_DEPTH = 64
MAX_JSON_DEPTH_CEILING = 128

#: NUL, which jsonb refuses, and lone UTF-16 surrogates (``"\\ud800"`` in JSON), which no
#: UTF-8 encoder takes: neither can be stored, hashed or sent on.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _why(text: str) -> str:
    if "\x00" in text:
        return "must not contain NUL characters"
    return "must not contain lone surrogates (unpaired \\ud800-\\udfff escapes)"


def readable(value: Any) -> Any:
    """``value`` with every NUL and lone surrogate in its text (strings and keys) replaced
    by U+FFFD: what user code said (an exception's message, a hook's refusal) stored as
    near as can be, where PostgreSQL refused it whole and the record was lost."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {readable(k): readable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [readable(v) for v in value]
    return value


def storable(value: Any, depth: int = 0) -> Any:
    """What an order type's hook said (a refusal's message and details) as JSON can hold
    it: text made :func:`readable`, a value JSON has no word for (a datetime, a set, an
    object, NaN, a key that is not text) said as its text, nesting past 32 levels as text.
    A hook's ``ValidationFailed({"since": datetime(...)})`` was a 500 over HTTP and a lost
    order through Celery (its refusal could not be recorded)."""
    if isinstance(value, str):
        return readable(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and not too_long(value):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if depth < _STORABLE_DEPTH and isinstance(value, dict):
        return {str(storable(_said(k))): storable(v, depth + 1) for k, v in value.items()}
    if depth < _STORABLE_DEPTH and isinstance(value, list | tuple):
        return [storable(v, depth + 1) for v in value]
    return readable(_said(value))


_STORABLE_DEPTH = 32


def _said(value: Any) -> str:
    """``str(value)``, or its type's name when that fails."""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


#: How much of an exception's text a failure report keeps: a message holding a whole
#: response body was refused (413) and the item stayed leased until its TTL.
FAILURE_TEXT = 1000


def failure_text(said: str | BaseException, limit: int = FAILURE_TEXT) -> str:
    """What an exception said, as a failure's record stores it (a ``fail`` report of the
    consumer agents and ``WorkClient``'s lease block; a failed apply, 2,000): its first
    ``limit`` characters, NUL and lone surrogates replaced (:func:`readable`), so the
    record is never refused for its text. Given the exception, its ``str()``, or its
    class's name when that ``__str__`` raises or returns no text (the report was lost,
    and the lease held until its TTL)."""
    text = said if isinstance(said, str) else exception_text(said)
    return str(readable(text[:limit]))


def exception_text(exc: BaseException) -> str:
    """``str(exc)``; for an exception whose ``__str__`` fails, a line naming its class."""
    try:
        return str(exc)
    except Exception:  # user code: an attribute never set, a non-string returned
        return f"{type(exc).__name__} (its message could not be read)"


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity``; a refusal is a
    ``ValueError`` whose text says why (and where, for text that is not JSON) in the
    words of JSON, not of Python (an integer past Python's digit limit)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            raise ValueError(f"an integer of more than {MAX_INT_DIGITS} digits") from exc
        raise


#: A JSON string, escapes included; an unterminated one runs to the end (so a body with many
#: stray quotes is still one linear pass: no match is ever retried from a later quote).
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = tuple(1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256))


def raw_depth(raw: str | bytes) -> int:
    """How deep the containers of the JSON text ``raw`` nest, without parsing it (and so
    without recursion): strings are cut out, then the brackets left are counted in one pass
    of C-level loops. Malformed text gets a number too; the parser refuses it afterwards."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets), initial=0))


def deeper_than(value: Any, limit: int) -> bool:
    """Whether the containers of the Python value ``value`` nest deeper than ``limit``
    (iteratively: a value too deep to recurse into is answered, not a ``RecursionError``)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children: Any = v.values()
        elif isinstance(v, list | tuple):
            children = v
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def too_deep(limit: int, what: str = "the JSON value") -> MalformedJSON:
    """The error for JSON nested deeper than ``limit``, the same on every surface."""
    return MalformedJSON(
        f"{what} nests deeper than {limit} levels (WORK_MANAGER_MAX_JSON_DEPTH)",
        details={"max_depth": limit},
    )


def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8; what checksums, comparisons and size
    limits measure. A number is written as PostgreSQL's ``jsonb`` gives it back (a float
    Python writes with an exponent, ``1e+23``, as its exact integer; ``-0.0`` as
    ``0.0``), so a value reads the same before it is stored and after, on either store:
    a repeated proposal was refused ``dedupe_key_reused`` on PostgreSQL only."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if "e+" in text or "-0.0" in text:  # rare: the walk only when such a float may be in it
        text = json.dumps(
            _as_stored(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    return text.encode()


def _as_stored(value: Any) -> Any:
    if isinstance(value, float):
        if value == 0:
            return 0.0
        written = repr(value)
        return int(Decimal(written)) if "e+" in written else value
    if isinstance(value, dict):
        return {k: _as_stored(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_stored(v) for v in value]
    return value


def problems(value: Any, path: str = "$") -> list[dict[str, str]]:
    """Where ``value`` holds something no JSON column can store, in document order; the
    search stops past :data:`~workmanager.errors.MAX_DETAILS` (the refusal lists no more)."""
    found: list[dict[str, str]] = []
    stack: list[tuple[str, Any]] = [(path, value)]
    spelled = 0  # the digits its floats gain written out in full
    while stack and len(found) <= MAX_DETAILS:
        where, v = stack.pop()
        if isinstance(v, int | float) and not isinstance(v, bool):
            said, spelled = _number_problems(v, where, path, spelled)
            found += said
        elif isinstance(v, str) and _UNSTORABLE.search(v):
            found.append(problem(where, _why(v), "pattern"))
        elif isinstance(v, dict):
            children = []
            for k, item in v.items():
                bad_key = _bad_key(k)
                if bad_key is not None:
                    found.append(problem(where, *bad_key))
                children.append((f"{where}.{k}", item))
            stack.extend(reversed(children))
        elif isinstance(v, list | tuple):
            stack.extend((f"{where}[{i}]", v[i]) for i in range(len(v) - 1, -1, -1))
        elif not (v is None or isinstance(v, bool | int | float | str)):
            found.append(problem(where, f"{type(v).__name__} is not JSON", "type"))
    return found


#: The most characters a value's floats may gain written out in full, as PostgreSQL's
#: ``jsonb`` stores and reads them (``1e308`` back as 309 digits): 4 MiB, the default
#: body limit, so a value read back is at most that much larger than the value sent. A
#: body of ``1e308`` floats read back 50 times its size (186 MB for a 3.6 MB submit).
MAX_SPELLED_OUT = 4 * 1024 * 1024
_SPELLED_OUT = (
    f"its floats written out in full, as PostgreSQL stores them (1e308 as 309 digits), come"
    f" to over {MAX_SPELLED_OUT // 1024 // 1024} MiB more than sent: send such numbers as"
    " strings"
)
#: The most digits of an integer written as JSON: Python's own limit on converting an int
#: to text (``sys.get_int_max_str_digits``), past which every encoder raises.
MAX_INT_DIGITS = 4300
#: Integers up to this many bits have at most :data:`MAX_INT_DIGITS` digits (a cheap test
#: first; one bit more may still have as many, which the exact bound decides).
MAX_INT_BITS = int(MAX_INT_DIGITS * math.log2(10))
_TOO_LONG = 10**MAX_INT_DIGITS


def _number_problems(
    v: float, where: str, path: str, spelled: int
) -> tuple[list[dict[str, str]], int]:
    """Why the number ``v`` at ``where`` cannot be stored, and the digits the floats of
    the value at ``path`` gain written out in full so far: past :data:`MAX_SPELLED_OUT`
    the value is refused, once (no more floats are counted)."""
    why = _bad_number(v)
    if why is not None:
        return [problem(where, why, "type")], spelled
    if isinstance(v, float) and v and not 1e-4 <= abs(v) < 1e16:  # written with an exponent
        spelled += _growth(v)
        if spelled > MAX_SPELLED_OUT:
            return [problem(path, _SPELLED_OUT, "maxLength")], -(2**62)
    return [], spelled


def _growth(v: float) -> int:
    """The characters ``v`` gains written out in full as PostgreSQL writes it
    (``1.5e-06`` → ``0.0000015``: 2; ``1e+308`` → 309 digits: 303)."""
    written = repr(abs(v))
    mantissa, _, exponent = written.partition("e")
    digits = len(mantissa.replace(".", "").rstrip("0") or "0")
    power = int(exponent or 0)
    plain = max(digits, power + 1) if power >= 0 else 1 - power + digits
    return max(0, plain - len(written))


def _bad_key(k: Any) -> tuple[str, str] | None:
    """Why a key cannot be stored, and the rule (``None``: it can)."""
    if not isinstance(k, str):
        # json.dumps would write 1 as "1", and 1 beside "1" as one key twice
        return f"keys must be strings, not {type(k).__name__}", "type"
    if _UNSTORABLE.search(k):
        return "keys " + _why(k), "pattern"
    return None


def too_long(v: int) -> bool:
    """An integer of more than :data:`MAX_INT_DIGITS` digits (no encoder writes it)."""
    return v.bit_length() > MAX_INT_BITS and abs(v) >= _TOO_LONG


def _bad_number(v: float) -> str | None:
    """Why a number cannot be written as JSON (``None``: it can)."""
    if isinstance(v, float):
        return None if math.isfinite(v) else "must be a finite number"
    if too_long(v):
        return f"an integer of more than {MAX_INT_DIGITS} digits"
    return None


def json_fields(fields: dict[str, Any], max_depth: int) -> None:
    """The fields of one request (a submit's result, evidence and notes), each storable
    JSON, its problems at paths from its own name (``result.s``, as the schema's are), and
    their depth counted as in the body that carries them."""
    if deeper_than(fields, max_depth):
        raise too_deep(max_depth, "the value")
    for name, value in fields.items():
        json_value(value, name, max_depth)


def json_value(value: Any, path: str = "$", max_depth: int = MAX_JSON_DEPTH_CEILING) -> Any:
    """Return ``value`` when it is storable JSON, else raise :class:`ValidationFailed`
    (or :class:`MalformedJSON` when it nests deeper than ``max_depth``: callers' values
    pass ``settings.max_json_depth``; values made by code, the ceiling)."""
    if deeper_than(value, max_depth):
        raise too_deep(max_depth, "the value" if path == "$" else path)
    found = problems(value, path)
    if found:
        first = found[0]
        where = "" if first["path"] == path else f"{first['path']}: "
        raise ValidationFailed(found, f"{path} is not storable JSON ({where}{first['message']})")
    return value
