"""Reading the config YAML files: which files, strict YAML flavour, line numbers.

The loader is PyYAML's safe loader with two YAML 1.2 rules: only
``true``/``false`` (also ``True``, ``TRUE``, ...) are booleans, so ``yes``, ``no``, ``on``,
``off`` and ``NO`` stay strings; and a float may be written without a dot
(``2e9``, ``1.5e9``), which YAML 1.1 would read as a string.  Duplicate keys
in one mapping are an error rather than "last one wins".
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import yaml

from agent.errors import ConfigError

KeyPath = tuple[str | int, ...]

_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_FLOAT_RE = re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 booleans and floats such as ``2e9``."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag not in (_BOOL_TAG, _FLOAT_TAG)]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


@dataclasses.dataclass
class Layer:
    """One layer of settings: its data, where it came from, and the line of each key."""

    data: Any
    source: str                                   # file name or environment variable
    lines: dict[KeyPath, int] = dataclasses.field(default_factory=dict)


def config_files(path: str | os.PathLike[str]) -> list[Path]:
    """``[path, *sorted(path.parent/"conf.d"/"*.yaml")]``: the files a load reads, in order.

    Raises ``ConfigError`` when ``path`` is not a readable file.
    """
    base = Path(path)
    if not base.is_file():
        why = "is not a regular file" if base.exists() else "not found"
        raise ConfigError("", f"config file {why}: {base}")
    confd = base.parent / "conf.d"
    try:
        extra = [p for p in confd.glob("*.yaml") if p.is_file() and not p.name.startswith(".")]
    except OSError as e:
        raise ConfigError("", f"cannot read {confd}: {e.strerror or e}") from None
    return [base, *sorted(extra, key=lambda p: p.name)]


def dotted(path: KeyPath) -> str:
    """``("access", "viewer", "uids", 1)`` -> ``"access.viewer.uids[1]"``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def read_yaml(path: Path) -> Layer:
    """Parse one file into a :class:`Layer` (data, file name, line of every key).

    Raises ``ConfigError`` when it cannot be read, is not YAML (``file:line:col``),
    has a duplicate key, or its top level is not a mapping (empty is fine).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("", f"cannot read {path}: {e}") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError("", _yaml_error(path, e)) from None
    finally:
        loader.dispose()
    if data is not None and not isinstance(data, dict):
        raise ConfigError("", f"{path}: the top level must be a mapping of sections, "
                              f"got a {type(data).__name__}")
    layer = Layer(data, str(path))
    if node is not None:
        _node_lines(node, (), layer, set())
    return layer


def _yaml_error(path: Path, e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    return f"{where}: YAML syntax error: {problem}" + (f" ({context})" if context else "")


def _node_lines(node: yaml.Node, path: KeyPath, layer: Layer, seen: set[int]) -> None:
    """Record the line of every key and list item; reject duplicate keys."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            layer.lines[(*path, i)] = item.start_mark.line + 1
            _node_lines(item, (*path, i), layer, seen)
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = (*path, str(key_node.value))
            line = key_node.start_mark.line + 1
            if sub in layer.lines and sub[-1] != "<<":
                raise ConfigError(dotted(sub), f"duplicate key (lines {layer.lines[sub]} and "
                                               f"{line} of {layer.source})")
            layer.lines[sub] = line
            _node_lines(value_node, sub, layer, seen)
