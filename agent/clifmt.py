"""Readable renderings of command replies for ``vm-agentctl`` (sizes in decimal GB/MB)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent import containersfmt, jobsfmt, ollamafmt, trendfmt


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
    sampled = {f"disk_used_percent:{disk['mount']}" for disk in d["disks"]}
    for key in sorted(k for k in lv if k.startswith("disk_used_percent:") and k not in sampled):
        rows.append([f"disk {key.partition(':')[2]}", "not sampled (missing or hung mount)",
                     lv[key]])
    docker_level = lv.get("unhealthy_containers" if dk["available"] else "docker_available", "")
    rows.append(["docker", _docker_line(dk), docker_level])
    head = f"{d['status']}  sampled {d['sampled_at']} (steal/iowait over {cpu['window_s']} s)"
    out = head + "\n" + table(rows, ["metric", "value", "level"])
    if not dk["available"] and dk.get("error"):  # under the table: it would widen every row
        out += f"\ndocker: {dk['error']}"
    return out


def _docker_line(dk: dict[str, Any]) -> str:
    if not dk["available"]:
        return "unavailable (why: below)" if dk.get("error") else "unavailable"
    line = f"{dk['running']}/{dk['containers_total']} running, {dk['unhealthy']} unhealthy"
    if dk["unhealthy_names"]:
        line += " (" + ", ".join(dk["unhealthy_names"]) + ")"
    return line


def _hold(d: dict[str, Any]) -> str:
    if not d.get("active"):
        return "no hold: destructive jobs may run"
    since, by = d.get("since") or "an unknown time", d.get("by") or "unknown"
    return f"HOLD active since {since} by {by}: {d.get('reason')}"


def _mapping(d: dict[str, Any]) -> str:
    return table([[k, _plain(v)] for k, v in d.items()], ["field", "value"])


def _plain(value: Any) -> str:
    """A value as an operator reads it: ``yes``/``no``, ``-`` for none, else ``str``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


def _io(rows: list[dict[str, Any]]) -> str:
    """``vm-agentctl io``: one line per container, worst first (as the agent sorts them)."""
    if not rows:
        return ("no container write rates (a container is listed from its second sample; "
                "none while Docker cannot be listed: see vm-agentctl health)")
    return table([[r["name"], f"{human_bytes(r['write_bytes_per_s'])}/s",
                   f"{human_bytes(r['projected_bytes_per_day'])}/day", r["level"]]
                  for r in rows], ["container", "writes", "projected", "level"])


def _score(card: dict[str, Any]) -> str:
    """``vm-agentctl score`` (agent/score.py renders it; imported only when used)."""
    from agent.score import render_table

    return render_table(card)


RENDERERS: dict[str, Callable[[Any], str]] = {
    "health": _health, "hold": _hold, "unhold": _hold, "version": _mapping,
    "run": jobsfmt.run_record, "jobs": jobsfmt.jobs, "runs": jobsfmt.runs,
    "io": _io, "ollama": ollamafmt.render,
    "score": _score,
    "trend": trendfmt.trend,
    "containers": containersfmt.containers, "logs": containersfmt.logs,
    "restart": containersfmt.restart, "restart-unhealthy": containersfmt.restart_unhealthy,
}


def render(cmd: str, data: Any) -> str:
    """The text ``vm-agentctl CMD`` prints for ``data``."""
    renderer: Callable[[Any], str] = RENDERERS.get(cmd, _mapping)
    if isinstance(data, dict) or (isinstance(data, list) and cmd in RENDERERS):
        return renderer(data)
    return str(data)
