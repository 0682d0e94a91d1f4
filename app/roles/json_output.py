"""JSON output: "any JSON object" or a JSON Schema, turned into a llama.cpp grammar.

Why a grammar: asked for JSON, a 0.5B model writes prose around it, drops a brace or invents a
field. Decoded under a GBNF grammar, every token it may pick keeps the text on a path to a valid
answer, so the reply always parses and matches the schema. The grammar comes from llama-cpp-
python's own converter (`json_schema_to_gbnf`, a port of llama.cpp's). The catch: that converter
silently ignores the keywords it cannot enforce (minimum, multipleOf, uniqueItems, ...) and
fails with a bare assert on others. So the schema is walked first, and any part the grammar
could not hold to is refused with its path, instead of answering with JSON that does not match.
The grammar only forbids; `instruction()` tells the model what to write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, SchemaConverter

from app.errors import SchemaError

_ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
}
_KEYWORDS = {
    "type",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "$ref",
    "$defs",
    "definitions",
    # objects
    "properties",
    "required",
    "additionalProperties",
    # arrays
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    # strings
    "pattern",
    "minLength",
    "maxLength",
    "format",
}
_TYPES = {"string", "number", "integer", "boolean", "null", "object", "array"}
_FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}


@dataclass(frozen=True)
class JsonFormat:
    """What a reply must be: any JSON object (`schema` None) or an instance of `schema`."""

    grammar: str
    schema: dict[str, Any] | None = None
    name: str = ""
    description: str = ""

    @classmethod
    def any_object(cls) -> JsonFormat:
        return cls(grammar=JSON_GBNF)

    @classmethod
    def from_schema(
        cls, schema: Any, *, name: str = "", description: str = "", path: str = ""
    ) -> JsonFormat:
        """The grammar for `schema`; a `SchemaError` naming the part (prefixed by `path`) if
        the grammar cannot enforce it."""
        check_schema(schema, path)
        try:
            grammar = _to_gbnf(schema)
        except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as error:
            raise SchemaError(path, f"cannot be turned into a grammar ({error}).") from None
        return cls(grammar=grammar, schema=schema, name=name, description=description)

    def instruction(self) -> str:
        """The system note that says what JSON to write (the grammar only rules out the rest)."""
        if self.schema is None:
            return "只输出一个 JSON 对象，不要写任何其他文字。"
        about = "：".join(part for part in (self.name, self.description) if part)
        about = f"（{about}）" if about else ""
        schema = json.dumps(self.schema, ensure_ascii=False)
        return f"只输出一个符合下面 JSON Schema 的 JSON 对象{about}，不要写任何其他文字：\n{schema}"


def check_schema(node: Any, path: str = "") -> None:
    """Refuse, by path, every part of a schema the grammar converter cannot enforce."""
    if not isinstance(node, dict):
        raise SchemaError(path, "a schema must be a JSON object.")
    for key, value in node.items():
        here = f"{path}.{key}" if path else key
        if key in _ANNOTATIONS:
            continue
        if key not in _KEYWORDS:
            raise SchemaError(here, f"'{key}' is not supported: the grammar cannot enforce it.")
        _check_keyword(key, value, here)


def _check_keyword(key: str, value: Any, here: str) -> None:
    if key == "type":
        kinds = value if isinstance(value, list) else [value]
        unknown = [kind for kind in kinds if kind not in _TYPES]
        if not kinds or unknown:
            raise SchemaError(
                here, f"unknown type {unknown or value!r}; use one of {_listed(_TYPES)}."
            )
    elif key in ("properties", "$defs", "definitions"):
        if not isinstance(value, dict):
            raise SchemaError(here, "must map names to schemas.")
        for name, sub in value.items():
            check_schema(sub, f"{here}.{name}")
    elif key in ("anyOf", "oneOf", "prefixItems"):
        if not isinstance(value, list) or not value:
            raise SchemaError(here, "must be a non-empty list of schemas.")
        for index, sub in enumerate(value):
            check_schema(sub, f"{here}[{index}]")
    elif key == "items":
        for index, sub in enumerate(value) if isinstance(value, list) else [(None, value)]:
            check_schema(sub, here if index is None else f"{here}[{index}]")
    elif key == "additionalProperties" and not isinstance(value, bool):
        check_schema(value, here)
    elif key == "enum" and (not isinstance(value, list) or not value):
        raise SchemaError(here, "must be a non-empty list.")
    elif key == "required" and not (
        isinstance(value, list) and all(isinstance(x, str) for x in value)
    ):
        raise SchemaError(here, "must be a list of property names.")
    elif key in ("minItems", "maxItems", "minLength", "maxLength") and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0
    ):
        raise SchemaError(here, "must be a non-negative integer.")
    elif key == "pattern" and not (
        isinstance(value, str) and value.startswith("^") and value.endswith("$")
    ):
        raise SchemaError(here, "must be a regular expression anchored with ^ and $.")
    elif key == "format" and value not in _FORMATS:
        raise SchemaError(here, f"format {value!r} is not supported; use {_listed(_FORMATS)}.")
    elif key == "$ref" and not (isinstance(value, str) and value.startswith("#/")):
        raise SchemaError(here, "only local references (#/$defs/...) are supported.")


def _listed(names: set[str]) -> str:
    return ", ".join(sorted(names))


_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


class _Converter(SchemaConverter):
    """llama.cpp's converter, writing constants as UTF-8: with the stock one, an enum value
    such as "正面" must be written as "\\u6b63\\u9762", which the model has to spell out."""

    def _generate_constant_rule(self, value: Any) -> str:
        return self._format_literal(json.dumps(value, ensure_ascii=False))


def _to_gbnf(schema: dict[str, Any]) -> str:
    converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    resolved = converter.resolve_refs(schema, "input")
    converter.visit(resolved, "")
    # The stock string character rule lets a raw newline or tab into a string, which JSON
    # (and json.loads) refuses: keep control characters out, as llama.cpp's JSON_GBNF does.
    return converter.format_grammar().replace(_LOOSE_CHAR, _STRICT_CHAR)
