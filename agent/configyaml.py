"""Reading the config YAML files: which files, strict YAML flavour, line numbers.

The loader is PyYAML's safe loader with two YAML 1.2 rules: only
``true``/``false`` (also ``True``, ``TRUE``, ...) are booleans, so ``yes``, ``no``, ``on``,
``off`` and ``NO`` stay strings; and a float may be written without a dot
(``2e9``, ``1.5e9``), which YAML 1.1 would read as a string.  YAML 1.1's
base-60 numbers are off: ``1:30`` is the string it looks like, not 90.  Duplicate
keys in one mapping are an error rather than "last one wins"; so is a file that
aliases expand past :data:`MAX_VALUES` values (a "billion laughs"), nesting deeper
than Python's recursion limit, a control character or bytes that are not UTF-8.
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
_INT_TAG = "tag:yaml.org,2002:int"
#: values (scalars, lists, mappings) one file may hold once its aliases are expanded
MAX_VALUES = 100_000
_INT_RE = re.compile(r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X)  # PyYAML's, without base 60 (1:30)
_FLOAT_RE = re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 booleans and floats such as ``2e9``."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag not in (_BOOL_TAG, _FLOAT_TAG)]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag != _INT_TAG]
    for ch, rs in _Loader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_INT_TAG, _INT_RE, list("-+0123456789"))
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

    Hidden names and names not ending in ``.yaml`` (``50-host.yaml~``, ``#x.yaml#``,
    ``.x.yaml.swp``) are skipped.  Raises ``ConfigError`` when ``path`` is not a regular
    file, when ``conf.d`` exists but is not a readable folder, or when one of its
    ``*.yaml`` is not a regular file (a dangling symlink, a folder).
    """
    base = Path(path)
    if not base.is_file():
        why = "is not a regular file" if base.exists() else "not found"
        raise ConfigError("", f"config file {why}: {base}")
    confd = base.parent / "conf.d"
    try:
        names = sorted(n for n in os.listdir(confd)
                       if n.endswith(".yaml") and not n.startswith("."))
    except FileNotFoundError:
        return [base]
    except NotADirectoryError:
        raise ConfigError("", f"{confd} is not a folder (override files go in it: "
                              f"{confd}/50-host.yaml)") from None
    except OSError as e:
        raise ConfigError("", f"cannot read {confd}: {e.strerror or e}") from None
    extra = [confd / n for n in names]
    for p in extra:
        if not p.is_file():
            why = "is a folder" if p.is_dir() else "is not a regular file (a dangling link?)"
            raise ConfigError("", f"config file {p} {why}")
    return [base, *extra]


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
    node, data = _parse(path, _read_text(path))
    if data is not None and not isinstance(data, dict):
        raise ConfigError("", f"{path}: the top level must be a mapping of sections, "
                              f"got a {type(data).__name__}")
    layer = Layer(data, str(path))
    if node is not None:
        _node_lines(node, (), layer, set())
    return layer


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError("", f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); "
                              "save the file as UTF-8") from None


def _parse(path: Path, text: str) -> tuple[yaml.Node | None, Any]:
    """``(root node, data)`` of one YAML document; aliases counted before anything walks it."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)                   # the reader rejects control characters here
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_VALUES:
            raise ConfigError("", f"{path}: more than {MAX_VALUES} values once YAML aliases "
                                  "are expanded (an alias bomb?)")
        return node, None if node is None else loader.construct_document(node)
    except yaml.reader.ReaderError as e:
        line = text[:e.position].count("\n") + 1
        raise ConfigError("", f"{path}:{line}: YAML does not allow the control character "
                              f"#x{e.character:04x} (write it as an escape in double quotes)"
                          ) from None
    except yaml.YAMLError as e:
        raise ConfigError("", _yaml_error(path, e)) from None
    except RecursionError:
        raise ConfigError("", f"{path}: YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _expanded_size(node: yaml.Node, memo: dict[int, int | None]) -> int:
    """Values under ``node`` with every alias expanded, computed once per node.

    Raises ``yaml.YAMLError`` for a node that contains itself (``&a [*a]``).
    """
    if id(node) in memo:
        size = memo[id(node)]
        if size is None:
            raise yaml.MarkedYAMLError(problem="an alias refers to a node that contains it",
                                       problem_mark=node.start_mark)
        return size
    memo[id(node)] = None                        # being counted
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    memo[id(node)] = size = 1 + sum(_expanded_size(c, memo) for c in children)
    return size


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
