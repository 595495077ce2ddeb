"""Introspection of the settings table: field types, their names, bounds and values.

Shared by :mod:`agent.configload` (error messages) and :mod:`agent.configdoc`
(the reference page), so both word types and bounds the same way.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

SCALAR_NAMES: dict[Any, str] = {bool: "boolean (true or false)", int: "integer",
                                float: "number", str: "string", type(None): "null"}


def type_name(tp: Any) -> str:
    """Human name of a table type: ``integer``, ``number or null``, ``list of string``."""
    if dataclasses.is_dataclass(tp):
        return "section"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(type_name(a) for a in args)
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of string to {type_name(args[1])}"
    return SCALAR_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


#: patterns said in words (config.ABSOLUTE_PATH and the optional one)
PATTERN_WORDS = {r"/.*": "an absolute path (starting with /)",
                 r"(/.*)?": "empty or an absolute path (starting with /)"}


def bounds_text(meta: Mapping[str, Any]) -> str:
    """The allowed values a field's metadata states: ``1 to 4096``, ``>= 0``, ``one of: a, b``."""
    lo, hi = (_fmt_bound(meta.get(k), meta) for k in ("min", "max"))
    parts = [f"{lo} to {hi}" if lo and hi else f">= {lo}" if lo else f"<= {hi}" if hi else ""]
    if "choices" in meta:
        parts.append("one of: " + ", ".join(str(c) for c in meta["choices"]))
    if "pattern" in meta:
        pattern = meta["pattern"]
        parts.append(PATTERN_WORDS.get(pattern) or f"matches {pattern}")
    return "; ".join(p for p in parts if p)


def octal_text(value: int) -> str:
    """``0o660`` as YAML 1.1 writes it: ``"0660"`` (``"0"`` for zero)."""
    return f"0{value:o}" if value else "0"


def iter_fields(cls: Any) -> Iterator[tuple[dataclasses.Field[Any], Any]]:
    """``(field, resolved type)`` for each init field of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.init:
            yield f, hints[f.name]


def _fmt_bound(value: Any, meta: Mapping[str, Any]) -> str:
    if value is None:
        return ""
    return octal_text(value) if meta.get("octal") else f"{value:g}" if isinstance(value, float) \
        else str(value)


def describe(value: Any) -> str:
    """A YAML value for error messages: ``string 'yes'``, ``integer 1``, ``boolean true``, ``null``.

    Long values are cut to 60 characters.
    """
    if value is None:
        return "null"
    kind = {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "list", dict: "mapping"}.get(type(value), type(value).__name__)
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"
