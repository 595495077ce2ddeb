"""Readable renderings of ``vm-agentctl ollama ...`` replies (sizes in decimal GB/MB).

One renderer serves every ``ollama`` subcommand; it tells the replies apart
by their shape (PROTOCOL.md fields): a list is ``models``, ``ram`` marks
``loaded``, ``predicted_free_bytes`` ``impact``, ``was_loaded`` ``unload``,
``impact`` inside a reply ``load``.
"""

from __future__ import annotations

from typing import Any

from agent import clifmt


def models(rows: list[dict[str, Any]]) -> str:
    """``ollama models``: one line per local model."""
    if not rows:
        return "no Ollama models (ollama pull NAME)"
    return clifmt.table([[r["name"], clifmt.human_bytes(r["size_bytes"]),
                          r.get("modified_at") or "-", "loaded" if r["loaded"] else ""]
                         for r in rows], ["model", "size", "modified (UTC)", ""])


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def loaded(d: dict[str, Any]) -> str:
    """``ollama loaded``: loaded models, then the RAM bar and the GPU line."""
    rows = [[m["name"], clifmt.human_bytes(m["size_bytes"]), clifmt.human_bytes(m["ram_bytes"]),
             clifmt.human_bytes(m["vram_bytes"]), _percent(m.get("cpu_percent")),
             clifmt.human_bytes(m.get("rss_bytes")), m.get("expires_at") or "-"]
            for m in d["models"]]
    head = (clifmt.table(rows, ["model", "size", "RAM", "VRAM", "CPU", "RSS", "expires (UTC)"])
            if rows else "no model loaded")
    ram = d["ram"]
    bar = (f"RAM {clifmt.human_bytes(ram['total_bytes'])}: system "
           f"{clifmt.human_bytes(ram['system_used_bytes'])}, models "
           f"{clifmt.human_bytes(ram['models_bytes'])}, free "
           f"{clifmt.human_bytes(ram['free_bytes'])}")
    return "\n".join([head, bar, d["gpu"]["note"]])


def impact(d: dict[str, Any]) -> str:
    """``ollama impact M``: the level and the warning sentence."""
    return f"{d['level']}  {d['warning']}"


def load(d: dict[str, Any]) -> str:
    """``ollama load M``: what was loaded, noting a forced load."""
    forced = " (forced)" if d.get("forced") else ""
    return f"loaded {d['model']}{forced}; {d['impact']['warning']}"


def unload(d: dict[str, Any]) -> str:
    """``ollama unload M``."""
    if not d.get("was_loaded"):
        return f"{d['model']} was not loaded; nothing to do"
    return f"unloaded {d['model']}"


def render(data: Any) -> str:
    """The text for any ``vm-agentctl ollama ...`` reply (see the module docstring)."""
    if isinstance(data, list):
        return models(data)
    if "ram" in data:
        return loaded(data)
    if "predicted_free_bytes" in data:
        return impact(data)
    if "was_loaded" in data:
        return unload(data)
    return load(data)
