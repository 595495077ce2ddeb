"""``python -m agent.configdoc`` prints docs/CONFIG.md, generated from the settings table.

One Markdown table per section of :class:`agent.config.Config` (key path,
type, default, allowed values, help), in the table's order.  The defaults
are those of ``load_config(None, environ={})``, so the page does not depend
on the environment it was generated in.  ``tests/unit/test_config.py`` fails
when docs/CONFIG.md differs from :func:`render`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from agent.config import Config
from agent.configload import load_config
from agent.configtable import bounds_text, iter_fields, octal_text, type_name
from agent.configyaml import KeyPath, dotted

_HEAD = ["| Key | Type | Default | Allowed | Description |", "| --- | --- | --- | --- | --- |"]

_INTRO = """\
# Configuration reference

Generated from `agent/config.py` by `python -m agent.configdoc > docs/CONFIG.md`;
do not edit by hand (a unit test fails when this page is stale).  The shipped,
commented configuration is `etc/vm-agent.yaml`.

## How the configuration is read

- `vm-agent serve --config FILE` reads `FILE`, then every `*.yaml` file in the
  `conf.d/` folder next to it, sorted by name (byte order; hidden files and
  other extensions are ignored).  Later files win: mappings merge key by key,
  lists and scalars replace (a list in `conf.d/` replaces the whole list).
  A section left empty (every key under it commented out) changes nothing.
- Layers, later wins: built-in defaults, environment variables ({env}),
  `FILE`, the `conf.d/` files.
- Loading is strict: an unknown key, a wrong type, an out-of-range value, a
  duplicate key or a YAML syntax error stops start-up with exit code 78
  (EX_CONFIG) and a message naming the key path, the allowed values and the
  `file:line` that set the value.
- YAML flavour: only `true`/`false` are booleans (`yes`, `no`, `on`, `off`
  are strings, and a string is never taken for a boolean).  Whole numbers are
  integers; a leading `0` means octal (`0660`).  Numbers may use an exponent
  (`1.5e9`).  `null` is allowed only where the type says "or null".
- Units: sizes in bytes, durations in seconds, percentages 0-100.  GB and MB
  in the descriptions are decimal (10^9 and 10^6 bytes).
- `GET /v1/version` reports the config digest: the sha256 of the canonical
  JSON (sorted keys, no spaces) of the effective settings.
"""


def render() -> str:
    """The whole docs/CONFIG.md text (Markdown, ends with a newline)."""
    cfg = load_config(None, environ={})
    out = [_INTRO.format(env=_env_list())]
    top: list[str] = []
    for f, tp in iter_fields(Config):
        if dataclasses.is_dataclass(tp):
            out += [f"## `{f.name}`", "", f"{_cap(f.metadata['help'])}.", "", *_HEAD,
                    *_rows((f.name,), tp, getattr(cfg, f.name)), ""]
        else:
            top.append(_row((f.name,), f.metadata, tp, getattr(cfg, f.name)))
    if top:
        out += ["## Top-level keys", "", *_HEAD, *top, ""]
    return "\n".join(out)


def main() -> None:
    """Print :func:`render` to stdout."""
    sys.stdout.write(render())


def _rows(path: KeyPath, cls: Any, value: Any) -> Iterator[str]:
    for f, tp in iter_fields(cls):
        sub = (*path, f.name)
        if dataclasses.is_dataclass(tp):
            yield _cells(dotted(sub), "section", "", "", f.metadata.get("help", ""))
            yield from _rows(sub, tp, getattr(value, f.name))
            continue
        yield _row(sub, f.metadata, tp, getattr(value, f.name))
        item = _item_class(tp)
        if item is not None:
            yield from _rows((*sub, "<item>"), item, item())


def _item_class(tp: Any) -> Any:
    """The dataclass inside ``tuple[D, ...]`` or ``dict[str, D]``, else None."""
    args = [a for a in getattr(tp, "__args__", ()) if dataclasses.is_dataclass(a)]
    return args[0] if args else None


def _row(path: KeyPath, meta: Mapping[str, Any], tp: Any, value: Any) -> str:
    default = _default_text(value, meta)
    if meta.get("env"):
        default += f" (or `${meta['env']}`)"
    return _cells(dotted(path), type_name(tp), default, _code(bounds_text(meta)),
                  meta.get("help", ""))


def _default_text(value: Any, meta: Mapping[str, Any]) -> str:
    if isinstance(value, int) and meta.get("octal"):
        return f"`{octal_text(value)}`"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    if dataclasses.is_dataclass(value) or (
            isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0])):
        return "see below"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _cells(*cells: str) -> str:
    key, *rest = (c.replace("|", "\\|") for c in cells)
    return "| " + " | ".join([f"`{key}`", *rest]) + " |"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _env_list() -> str:
    found: list[str] = []

    def walk(cls: Any, path: KeyPath) -> None:
        for f, tp in iter_fields(cls):
            if dataclasses.is_dataclass(tp):
                walk(tp, (*path, f.name))
            elif f.metadata.get("env"):
                found.append(f"`{f.metadata['env']}` for `{dotted((*path, f.name))}`")
    walk(Config, ())
    return ", ".join(found) or "none"


if __name__ == "__main__":
    main()
