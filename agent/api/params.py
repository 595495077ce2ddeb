"""Typed request parameters, validated once at the edge.

A command's parameters are a frozen dataclass.  Path parameters, the query
string and the JSON body are merged into one mapping and checked against it:
unknown fields, wrong types and out-of-range values raise
:class:`agent.errors.BadRequest` naming the field; nothing reaches a handler
unchecked.  Field metadata: ``min``/``max`` (inclusive, numbers),
``max_len`` (strings), ``pattern`` (a full-match regex, strings) with an
optional ``hint`` (the rule in words, for the error message), ``choices``.
Query strings carry strings only: ``"true"``/``"false"`` become booleans,
decimal digits integers.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

from agent.errors import BadRequest

P = TypeVar("P")

_QUERY_BOOLS = {"true": True, "false": False, "1": True, "0": False}


@dataclasses.dataclass(frozen=True)
class NoParams:
    """A command that takes no parameters."""


#: One line of printable text, not blank: no C0/C1 control characters, DEL,
#: line/paragraph separators or bidirectional overrides (they would rewrite a
#: terminal or a log line when shown).
ONE_LINE_TEXT = (r"(?=.*\S)[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")
ONE_LINE_HINT = "be one line of printable text, not blank"


def param(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A parameter field; ``meta`` holds the bounds listed in the module docstring."""
    return dataclasses.field(default=default, metadata=meta)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse_params(cls: type[P], raw: Mapping[str, Any], *, query_keys: frozenset[str]) -> P:
    """Build ``cls`` from ``raw``; ``query_keys`` came from the query string (strings).

    Raises BadRequest(field=...) for an unknown field, a missing required
    field, a wrong type or a value out of range.
    """
    if not raw and cls is NoParams:
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            allowed = ", ".join(sorted(fields)) or "none"
            raise BadRequest(key[:64], f"unknown parameter {key[:64]!r}; allowed: {allowed}")
    hints = _hints(typing.cast(type, cls))
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _check(name, hints[name], raw[name], f.metadata,
                                  from_query=name in query_keys)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise BadRequest(name, f"missing required parameter {name!r}")
    return cls(**values)


def _check(name: str, hint: Any, value: Any, meta: Mapping[str, Any], *, from_query: bool) -> Any:
    base, optional = _unwrap_optional(hint)
    if value is None:
        if optional:
            return None
        raise BadRequest(name, f"{name} must not be null")
    if from_query:
        value = _from_query(name, base, value)
    _check_type(name, base, value)
    _check_bounds(name, value, meta)
    return value


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _from_query(name: str, base: Any, value: str) -> Any:
    if base is bool:
        if value.lower() not in _QUERY_BOOLS:
            raise BadRequest(name, f"{name} must be true or false, got {value!r}")
        return _QUERY_BOOLS[value.lower()]
    if base is int:
        if not re.fullmatch(r"-?[0-9]{1,1000}", value):  # a long one meets min/max below
            raise BadRequest(name, f"{name} must be an integer, got {value!r}")
        return int(value)
    if base is float:
        try:
            return float(value)
        except ValueError:
            raise BadRequest(name, f"{name} must be a number, got {value!r}") from None
    return value


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def _check_type(name: str, base: Any, value: Any) -> None:
    ok = isinstance(value, base) and not (base is int and isinstance(value, bool))
    if base is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        raise BadRequest(name, f"{name} must be {_TYPE_NAMES.get(base, base.__name__)}, "
                         f"got {type(value).__name__}")
    if base is str and not _is_unicode(value):
        raise BadRequest(name, f"{name} must be Unicode text (it holds a lone surrogate, "
                         "e.g. from a \\udcxx escape of a byte that is not UTF-8)")


def _is_unicode(text: str) -> bool:
    """False when ``text`` holds a lone surrogate (JSON's ``"\\ud800"`` escapes allow one):
    it could not be written to the journal, SQLite or a terminal as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_bounds(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    if "min" in meta and value < meta["min"]:
        raise BadRequest(name, f"{name} must be at least {meta['min']}, got {value}")
    if "max" in meta and value > meta["max"]:
        raise BadRequest(name, f"{name} must be at most {meta['max']}, got {value}")
    if "choices" in meta and value not in meta["choices"]:
        choices = ", ".join(map(str, meta["choices"]))
        raise BadRequest(name, f"{name} must be one of {choices}, got {value!r}")
    if "max_len" in meta and len(value) > meta["max_len"]:
        raise BadRequest(name, f"{name} is longer than {meta['max_len']} characters")
    if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
        hint = meta.get("hint") or f"match {meta['pattern']}"
        raise BadRequest(name, f"{name} must {hint}, got {value[:64]!r}")
