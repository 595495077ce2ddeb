"""Strict, declarative loading of the settings table (:mod:`agent.config`).

Layers, later wins: built-in defaults < environment variables named by a
field's ``env`` metadata (``DOCKER_HOST``) < the config file < every
``conf.d/*.yaml`` next to it, sorted by name (code-point order, like
``LC_ALL=C ls``; hidden files skipped).  Mappings merge key by key; lists
and scalars replace; an empty section (``server:`` with every key commented
out, i.e. null) merges nothing.

The result is built by walking the dataclasses with ``typing.get_type_hints``
-- no per-key code.  Supported field types: nested dataclasses, ``bool``
(only YAML ``true``/``false``), ``int`` (not bool), ``float`` (ints
accepted, finite only), ``str`` (no NUL), ``X | None``, ``tuple[X, ...]`` (from a YAML
list) and ``dict[str, X]``.  YAML is read as PyYAML's safe loader with YAML
1.2 booleans (``yes``/``no``/``on``/``off`` stay strings) and exponent floats
without a dot (``2e9``).

Every failure is :class:`agent.errors.ConfigError` whose ``key`` is the
dotted path (``access.viewer.uids[1]``) and whose message ends with the
file and line that set the value, e.g. ``(set in /etc/vm-agent/conf.d/50-host.yaml:3)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, NoReturn, TypeVar

from agent.config import Config
from agent.configtable import (
    SCALAR_NAMES,
    bounds_text,
    describe,
    iter_fields,
    octal_text,
    type_name,
)
from agent.configyaml import KeyPath, Layer, config_files, dotted, read_yaml
from agent.errors import ConfigError

T = TypeVar("T")
DEFAULTS_SOURCE = "built-in defaults"


# ---------------------------------------------------------------- public API

def load_config(path: str | os.PathLike[str] | None, *,
                environ: Mapping[str, str] = os.environ) -> Config:
    """Load ``path`` and its ``conf.d/*.yaml`` over the defaults into a frozen :class:`Config`.

    ``path`` None gives the defaults (plus ``env`` variables from ``environ``).
    Raises ``ConfigError`` for a missing/unreadable file, a YAML syntax error
    (``file:line:column``), an unknown key, a wrong type, an out-of-range
    value or a failed cross-field ``validate()``.
    """
    return load_settings(Config, path, environ=environ)


def load_settings(cls: type[T], path: str | os.PathLike[str] | None, *,
                  environ: Mapping[str, str] = os.environ) -> T:
    """:func:`load_config` for any settings dataclass ``cls`` (every field has a default)."""
    # the defaults go through the same checks, so 5 and 5.0 load (and digest) alike
    layers = [Layer(effective_config(cls()), DEFAULTS_SOURCE), _env_layer(cls, environ)]
    layers += [read_yaml(p) for p in config_files(path)] if path is not None else []
    merged: Any = {}
    sources: dict[KeyPath, str] = {}
    for layer in layers:
        merged = _merge(merged, layer.data)
        _record(layer.data, (), layer, sources)
    ctx = _Context(sources)
    result = _build(cls, merged, (), cls(), ctx)
    _validate(result, (), ctx)
    return typing.cast(T, result)


def effective_config(cfg: Any, *, redact_secrets: bool = False) -> dict[str, Any]:
    """The loaded settings as a plain JSON-able dict (tuples become lists).

    With ``redact_secrets`` a non-empty field whose metadata has ``secret``
    reads ``"***"``.
    """
    plain = _plain(cfg, redact_secrets=redact_secrets)
    if not isinstance(plain, dict):
        raise TypeError(f"not a settings dataclass: {type(cfg).__name__}")
    return plain


def config_digest(cfg: Any) -> str:
    """Hex sha256 of the canonical JSON (sorted keys, no spaces) of :func:`effective_config`.

    Equal settings give equal digests however they were written (``10`` vs
    ``10.0``, key order, comments, which file).
    """
    text = json.dumps(effective_config(cfg), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- layers

def _env_layer(cls: Any, environ: Mapping[str, str]) -> Layer:
    """Values of fields whose ``env`` variable is set and non-empty in ``environ``."""
    used: list[str] = []
    data = _env_values(cls, environ, used)
    return Layer(data, "environment variable " + ", ".join(used))


def _env_values(cls: Any, environ: Mapping[str, str], used: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f, tp in iter_fields(cls):
        if dataclasses.is_dataclass(tp) and (sub := _env_values(tp, environ, used)):
            out[f.name] = sub
        elif (var := f.metadata.get("env")) and environ.get(var):
            out[f.name] = environ[var]
            used.append(var)
    return out


def _merge(base: Any, over: Any) -> Any:
    """Mappings merge key by key; anything else replaces; null over a mapping keeps it."""
    if isinstance(base, dict) and over is None:
        return base
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return over


def _record(data: Any, path: KeyPath, layer: Layer, sources: dict[KeyPath, str]) -> None:
    if path:
        line = layer.lines.get(path)
        sources[path] = f"{layer.source}:{line}" if line else layer.source
    if isinstance(data, dict):
        for key, value in data.items():
            _record(value, (*path, str(key)), layer, sources)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _record(value, (*path, i), layer, sources)


# ---------------------------------------------------------------- building

@dataclasses.dataclass(frozen=True)
class _Context:
    sources: dict[KeyPath, str]

    def where(self, path: KeyPath) -> str:
        """The source that set ``path`` or its nearest ancestor."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.sources:
                return self.sources[path[:end]]
        return DEFAULTS_SOURCE

    def under(self, path: KeyPath) -> str:
        """Every source that set ``path`` or anything below it, in order of first use."""
        found = [s for p, s in self.sources.items() if p[:len(path)] == path]
        return ", ".join(dict.fromkeys(found)) or self.where(path)

    def fail(self, path: KeyPath, message: str, *, group_at: KeyPath | None = None) -> NoReturn:
        """Raise ``ConfigError`` for ``path`` naming who set it (or anything under ``group_at``)."""
        where = self.where(path) if group_at is None else self.under(group_at)
        raise ConfigError(dotted(path), f"{message} (set in {where})")


def _convert(value: Any, tp: Any, path: KeyPath, meta: Mapping[str, Any],
             default: Any, ctx: _Context) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, default, ctx)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return _union(value, args, path, meta, ctx)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _sequence(value, tp, path, meta, ctx)
    if origin is dict and args and args[0] is str:
        return _mapping(value, tp, path, meta, ctx)
    if tp in (bool, int, float, str):
        return _check_bounds(_scalar(value, tp, path, ctx), path, meta, ctx)
    raise TypeError(f"settings table: unsupported type {tp!r} at {dotted(path)}")


def _build(cls: Any, value: Any, path: KeyPath, default: Any, ctx: _Context) -> Any:
    fields = {f.name: (f, tp) for f, tp in iter_fields(cls)}
    value = {} if value is None else value
    if not isinstance(value, dict):
        ctx.fail(path, f"expected a section with keys {', '.join(fields)}; "
                       f"got {describe(value)}")
    changes: dict[str, Any] = {}
    for key, item in value.items():
        sub = (*path, str(key))
        if key not in fields:
            ctx.fail(sub, _unknown_key(key, list(fields), path))
        f, tp = fields[key]
        changes[key] = _convert(item, tp, sub, f.metadata, getattr(default, key), ctx)
    return dataclasses.replace(default, **changes)


def _unknown_key(key: Any, allowed: list[str], path: KeyPath) -> str:
    if not isinstance(key, str):
        return f"keys must be strings, got {describe(key)}"
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    section = f"'{dotted(path)}'" if path else "the top level"
    return f"unknown key '{key}'{hint}; allowed keys in {section}: {', '.join(allowed)}"


def _union(value: Any, args: tuple[Any, ...], path: KeyPath, meta: Mapping[str, Any],
           ctx: _Context) -> Any:
    rest = [a for a in args if a is not type(None)]
    if len(rest) != 1:
        raise TypeError(f"settings table: only 'X | None' unions are supported ({dotted(path)})")
    if value is None:
        return None
    return _convert(value, rest[0], path, meta, _default_of(rest[0]), ctx)


def _sequence(value: Any, tp: Any, path: KeyPath, meta: Mapping[str, Any],
              ctx: _Context) -> tuple[Any, ...]:
    if not isinstance(value, list):
        ctx.fail(path, f"expected a {type_name(tp)}, got {describe(value)}")
    item_tp = typing.get_args(tp)[0]
    return tuple(_convert(v, item_tp, (*path, i), meta, _default_of(item_tp), ctx)
                 for i, v in enumerate(value))


def _mapping(value: Any, tp: Any, path: KeyPath, meta: Mapping[str, Any],
             ctx: _Context) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        ctx.fail(path, f"expected a {type_name(tp)}, got {describe(value)}")
    item_tp = typing.get_args(tp)[1]
    return {k: _convert(v, item_tp, (*path, k), meta, _default_of(item_tp), ctx)
            for k, v in value.items()}


def _default_of(tp: Any) -> Any:
    return tp() if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _scalar(value: Any, tp: type, path: KeyPath, ctx: _Context) -> Any:
    if tp is float and type(value) is int:                 # ints are accepted for numbers
        value = float(value) if abs(value) < 1e308 else math.inf
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        ctx.fail(path, f"expected {SCALAR_NAMES[tp]}, got {describe(value)}")
    if tp is float and not math.isfinite(typing.cast(float, value)):
        ctx.fail(path, f"expected a finite number, got {value}")
    if tp is str and "\0" in typing.cast(str, value):      # no path or name holds one
        ctx.fail(path, f"expected a string without NUL characters, got {describe(value)}")
    return value


def _check_bounds(value: Any, path: KeyPath, meta: Mapping[str, Any], ctx: _Context) -> Any:
    lo, hi = meta.get("min"), meta.get("max")
    bad = (lo is not None and value < lo) or (hi is not None and value > hi) \
        or ("choices" in meta and value not in meta["choices"]) \
        or ("pattern" in meta and not re.fullmatch(meta["pattern"], value))
    if bad:
        shown = octal_text(value) if meta.get("octal") else json.dumps(value)
        hint = (f" (a number without a leading 0 is decimal: for the mode {value}, write "
                f"0{value})" if meta.get("octal") and _octal_typed_as_decimal(value) else "")
        ctx.fail(path, f"got {shown}; allowed: {bounds_text(meta)}{hint}")
    return value


def _octal_typed_as_decimal(value: int) -> bool:
    """True when ``value``'s decimal digits read as octal make a mode (660 -> 0o660)."""
    digits = str(value)
    return value > 0o777 and set(digits) <= set("01234567") and int(digits, 8) <= 0o7777


def _validate(obj: Any, path: KeyPath, ctx: _Context) -> None:
    """Run every ``validate()`` hook, innermost first; prefix its key with the path."""
    if isinstance(obj, tuple | dict):
        for k, v in (obj.items() if isinstance(obj, dict) else enumerate(obj)):
            _validate(v, (*path, k), ctx)
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        _validate(getattr(obj, f.name), (*path, f.name), ctx)
    if callable(hook := getattr(obj, "validate", None)):
        try:
            hook()
        except ConfigError as e:
            full = (*path, *(e.key.split(".") if e.key else ()))
            ctx.fail(full, e.message, group_at=full[:-1] if e.key else path)


# ---------------------------------------------------------------- output helpers

def _plain(value: Any, *, redact_secrets: bool) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain_field(value, f, redact_secrets=redact_secrets)
                for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v, redact_secrets=redact_secrets) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, redact_secrets=redact_secrets) for k, v in value.items()}
    return value


def _plain_field(obj: Any, f: dataclasses.Field[Any], *, redact_secrets: bool) -> Any:
    value = getattr(obj, f.name)
    if redact_secrets and f.metadata.get("secret") and value:
        return "***"
    return _plain(value, redact_secrets=redact_secrets)
