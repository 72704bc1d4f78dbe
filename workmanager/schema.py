"""JSON Schema validation (draft 2020-12) with errors as ``{path, message, validator}``.

``jsonschema`` (with ``referencing``, ``rpds`` and ``attrs``, ~3 MiB resident) is imported
on the first schema checked, so a process whose order types declare none (a worker, a
producer) never loads it."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, ValidationFailed, problem

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

log = logging.getLogger("workmanager")


def _path(prefix: str, parts: Any) -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


def check_schema(schema: Any, where: str = "") -> None:
    """Raise :class:`ConfigurationError` when ``schema`` is not a valid JSON Schema."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    at = f" ({where})" if where else ""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ConfigurationError(f"invalid JSON Schema{at}: {exc.message}") from exc
    unresolved = _unresolved_ref(schema)
    if unresolved is not None:
        raise ConfigurationError(
            f"invalid JSON Schema{at}: $ref {unresolved[0]!r:.120} resolves nowhere"
            f" ({unresolved[1]})",
            hint="a $ref names a part of the same schema (e.g. #/$defs/name); remote"
            " schemas are not fetched",
        )


#: Keywords whose values are instances, not schemas: a ``$ref`` inside one is data.
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})


def _unresolved_ref(schema: Any) -> tuple[str, str] | None:
    """The first ``$ref`` of ``schema`` that resolves nowhere (and why), checked now so a
    type whose schema has one stops at start-up: the validator resolves a reference only
    when an instance reaches it, so every propose failed instead. Schemas with an ``$id``
    below their root (bases other than the document's) are left to the validator."""
    refs: list[str] = []
    stack = [(schema, True)]
    while stack:
        node, root = stack.pop()
        if isinstance(node, dict):
            if "$id" in node and not root:
                return None
            ref = node.get("$ref")
            if isinstance(ref, str):
                refs.append(ref)
            stack.extend((v, False) for k, v in node.items() if k not in DATA_KEYWORDS)
        elif isinstance(node, list):
            stack.extend((v, False) for v in node)
    if not refs:
        return None
    # the meta-schemas, which jsonschema resolves without fetching them
    from jsonschema_specifications import REGISTRY  # type: ignore[import-untyped]
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    base = schema.get("$id", "") if isinstance(schema, dict) else ""
    resource = DRAFT202012.create_resource(schema)
    resolver = REGISTRY.with_resource(base, resource).resolver(base_uri=base)
    for ref in refs:
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:
            return ref, type(exc).__name__
    return None


@lru_cache(maxsize=256)
def _validator(schema_key: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    schema = json.loads(schema_key)
    check_schema(schema)
    # Formats ("email", "uri", "date-time", ...) are asserted, as users of a schema expect.
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_errors(schema: dict[str, Any], instance: Any, prefix: str = "") -> list[dict[str, str]]:
    """Every error of ``instance`` against ``schema``, sorted by path. A schema that is
    not one (an order type's ``result_schema`` or ``evidence_schema``, given per item, so
    not checked when the type was registered) is the type's fault: one ``hook_error`` at
    ``prefix`` (a 422, as any hook of the type that fails), not a 500."""
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
    except (ConfigurationError, TypeError, ValueError) as exc:
        why = exc.message if isinstance(exc, ConfigurationError) else f"not JSON: {exc}"
        log.error("the order type's schema for %s is not a JSON Schema: %s", prefix or "$", why)
        return [problem(prefix or "$", f"the order type's schema is invalid: {why}", "hook_error")]
    try:
        errors = [
            problem(_path(prefix, e.absolute_path), e.message, str(e.validator))
            for e in validator.iter_errors(instance)
        ]
    except Exception as exc:  # a $ref that resolves nowhere fails only while validating
        log.error("the order type's schema for %s cannot be used: %s", prefix or "$", exc)
        why = f"the order type's schema is invalid: {type(exc).__name__}: {exc}"[:500]
        return [problem(prefix or "$", why, "hook_error")]
    return sorted(errors, key=lambda e: (e["path"], e["validator"]))


def validate(schema: dict[str, Any] | None, instance: Any, prefix: str = "") -> None:
    """Raise :class:`ValidationFailed` listing every error, when ``schema`` is set (``{}``
    accepts everything; ``False``, the schema that accepts nothing, refuses it)."""
    if schema is None:
        return
    errors = schema_errors(schema, instance, prefix)
    if errors:
        raise ValidationFailed(errors, f"{len(errors)} validation error(s) in {prefix or 'input'}")
