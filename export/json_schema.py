"""A small JSON Schema validator for the subset our site formats use (site/schema/*.schema.json).

Keywords: type, const, enum, required, properties, items (one schema for every item),
minItems, maxItems, minLength, minimum, maximum, exclusiveMinimum, and local `$ref`s
("#/$defs/<name>"); annotations ($schema, $id, $comment, title, description) are ignored.
A schema using any other keyword is refused (ValueError), so the schema can never ask
for a check this module silently skips. Unlisted properties are allowed, as in JSON Schema.

The viewer checks the same files against the same schemas with Ajv (draft 2020-12), and
site/js/schema.js words Ajv's first error as SchemaViolation does here, so a broken field
reads the same in a stage's error and on the page (tests/test_site_format.py compares them).
As in Ajv, const and enum compare JSON values, so `true` is not 1 (Python's `True == 1` would
say it is); stricter than Ajv, a const or enum 2 does not match 2.0 either (JavaScript cannot
tell them apart; a version number written as 2.0 is a bug on the writing side).

One deliberate difference from JSON Schema: "number" and "integer" are finite. JSON has no
NaN or Infinity; Python writes them anyway and the browser's JSON.parse then refuses the file.
"""

from __future__ import annotations

import json
import math
from typing import Any

ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "$defs"})
KEYWORDS = frozenset({"type", "const", "enum", "required", "properties", "items", "minItems", "maxItems",
                      "minLength", "minimum", "maximum", "exclusiveMinimum", "$ref"})
TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})


class SchemaViolation(ValueError):
    """A document does not match its schema. `field`: dotted path ("orbit.radius", "views[3].psnr")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f'"{field}" {message}')
        self.field = field


def _shown(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _is_type(value: Any, name: str) -> bool:
    if name in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return name == "number" or float(value).is_integer()
    return {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }[name](value)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: equal values of the same type all the way down (True is not 1; 2.0 is not 2)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _resolve(ref: str, root: dict) -> dict:
    if not ref.startswith("#/"):
        raise ValueError(f"$ref {ref!r}: only local references (#/...) are supported")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def check_schema(schema: dict, path: str = "#") -> None:
    """Raise ValueError if `schema` (or any schema inside it) uses a keyword this module does not implement."""
    if not isinstance(schema, dict):
        raise ValueError(f"schema at {path}: must be an object (got {_shown(schema)})")
    unknown = set(schema) - KEYWORDS - ANNOTATIONS
    if unknown:
        raise ValueError(f"schema at {path}: unsupported keyword(s) {sorted(unknown)}")
    types = schema.get("type", [])
    unknown = set(types if isinstance(types, list) else [types]) - TYPES
    if unknown:
        raise ValueError(f"schema at {path}: unknown type(s) {sorted(unknown)}")
    for key in ("properties", "$defs"):
        for name, sub in schema.get(key, {}).items():
            check_schema(sub, f"{path}/{key}/{name}")
    if "items" in schema:
        check_schema(schema["items"], f"{path}/items")


def validate(doc: Any, schema: dict) -> None:
    """Raise SchemaViolation naming the first field of `doc` that does not match `schema`."""
    _check(doc, schema, schema, "(top level)")


def _check(value: Any, schema: dict, root: dict, path: str) -> None:
    unknown = set(schema) - KEYWORDS - ANNOTATIONS
    if unknown:
        raise ValueError(f"schema at {path}: unsupported keyword(s) {sorted(unknown)}")
    if "$ref" in schema:
        _check(value, _resolve(schema["$ref"], root), root, path)
    sub = lambda key: key if path == "(top level)" else f"{path}.{key}"  # noqa: E731

    if "const" in schema and not _same(value, schema["const"]):
        raise SchemaViolation(path, f"must be {_shown(schema['const'])} (got {_shown(value)})")
    if "enum" in schema and not any(_same(value, allowed) for allowed in schema["enum"]):
        raise SchemaViolation(path, f"must be one of {_shown(schema['enum'])} (got {_shown(value)})")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in types):
            finite = " (finite)" if {"number", "integer"} & set(types) else ""
            raise SchemaViolation(path, f"must be {' or '.join(types)}{finite} (got {_shown(value)})")

    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                raise SchemaViolation(sub(key), "is required but missing")
        for key, prop in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], prop, root, sub(key))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", math.inf):
            lo, hi = schema.get("minItems", 0), schema.get("maxItems", "any")
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise SchemaViolation(path, f"must have {want} items (got {len(value)})")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        raise SchemaViolation(path, f"must be at least {schema['minLength']} character(s) long (got {_shown(value)})")
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaViolation(path, f"must be >= {schema['minimum']} (got {_shown(value)})")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaViolation(path, f"must be <= {schema['maximum']} (got {_shown(value)})")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            raise SchemaViolation(path, f"must be > {schema['exclusiveMinimum']} (got {_shown(value)})")
