"""Readable renderings of command replies for ``vm-agentctl`` (sizes in decimal GB/MB)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def human_bytes(n: float | None) -> str:
    """Bytes as decimal units, as Docker and ``df -H`` print them: ``1.5 GB``, ``200 MB``."""
    if n is None:
        return "-"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def table(rows: list[list[str]], header: list[str]) -> str:
    """A left-aligned text table."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = [header, *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
                     for r in lines)


def _health(d: dict[str, Any]) -> str:
    lv = d["levels"]
    cpu, mem, load, dk = d["cpu"], d["memory"], d["load"], d["docker"]
    rows = [
        ["steal", f"{cpu['steal_percent']:.1f} %", lv.get("steal_percent", "")],
        ["iowait", f"{cpu['iowait_percent']:.1f} %", lv.get("iowait_percent", "")],
        ["load1/core", f"{load['load1_per_core']:.2f} ({cpu['cores']} cores)",
         lv.get("load1_per_core", "")],
        ["MemAvailable", f"{human_bytes(mem['available_bytes'])} of "
         f"{human_bytes(mem['total_bytes'])}", lv.get("memory_available_bytes", "")],
        ["swap used", f"{human_bytes(mem['swap_used_bytes'])} of "
         f"{human_bytes(mem['swap_total_bytes'])}", lv.get("swap_used_bytes", "")],
        ["SwapCached", human_bytes(mem["swap_cached_bytes"]), lv.get("swap_cached_bytes", "")],
    ]
    for disk in d["disks"]:
        rows.append([f"disk {disk['mount']}", f"{disk['used_percent']:.1f} % used, "
                     f"{human_bytes(disk['free_bytes'])} free",
                     lv.get(f"disk_used_percent:{disk['mount']}", "")])
    docker_level = lv.get("unhealthy_containers" if dk["available"] else "docker_available", "")
    rows.append(["docker", _docker_line(dk), docker_level])
    head = f"{d['status']}  sampled {d['sampled_at']} (steal/iowait over {cpu['window_s']} s)"
    return head + "\n" + table(rows, ["metric", "value", "level"])


def _docker_line(dk: dict[str, Any]) -> str:
    if not dk["available"]:
        return f"unavailable: {dk.get('error')}"
    line = f"{dk['running']}/{dk['containers_total']} running, {dk['unhealthy']} unhealthy"
    if dk["unhealthy_names"]:
        line += " (" + ", ".join(dk["unhealthy_names"]) + ")"
    return line


def _hold(d: dict[str, Any]) -> str:
    if not d.get("active"):
        return "no hold: destructive jobs may run"
    return f"HOLD active since {d.get('since')} by {d.get('by')}: {d.get('reason')}"


def _mapping(d: dict[str, Any]) -> str:
    return table([[k, str(v)] for k, v in d.items()], ["field", "value"])


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "health": _health, "hold": _hold, "unhold": _hold, "version": _mapping,
}


def render(cmd: str, data: Any) -> str:
    """The text ``vm-agentctl CMD`` prints for ``data``."""
    renderer = RENDERERS.get(cmd, _mapping)
    return renderer(data) if isinstance(data, dict) else str(data)
