"""Readable renderings of the container commands for ``vm-agentctl`` (sizes in decimal MB/GB)."""

from __future__ import annotations

from typing import Any

from agent import clifmt


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _memory(row: dict[str, Any]) -> str:
    used = clifmt.human_bytes(row["memory_bytes"])
    limit = row["memory_limit_bytes"]
    return f"{used} / {clifmt.human_bytes(limit) if limit else 'no limit'}"


def _watchdog(w: dict[str, Any]) -> str:
    if w.get("opted_out"):
        return "opted out"
    if w.get("protected"):
        return "protected"
    state = "GAVE UP" if w.get("gave_up") else "on"
    return f"{state} ({w.get('restarts_in_window')}/{w.get('max_restarts')} restarts)"


def containers(rows: list[dict[str, Any]]) -> str:
    """``vm-agentctl containers``: one line per container."""
    if not rows:
        return "no containers"
    return clifmt.table(
        [[r["name"], r["stack"] or "-", r["state"], r["health"], _age(r["uptime_s"]),
          str(r["restart_count"]), _memory(r), "yes" if r["oom_killed"] else "",
          _watchdog(r["watchdog"])] for r in rows],
        ["name", "stack", "state", "health", "up", "restarts", "memory", "oom", "watchdog"])


def logs(data: dict[str, Any]) -> str:
    """``vm-agentctl logs NAME``: ``TIME TEXT`` lines, oldest first."""
    return "\n".join(f"{line['time']} {line['text']}" for line in data["lines"])


def restart(data: dict[str, Any]) -> str:
    """``vm-agentctl restart NAME``."""
    line = f"{data['name']}: {data['result']} in {data['took_s']:.1f} s"
    return line + (" (watchdog breaker reset)" if data.get("breaker_reset") else "")


def restart_unhealthy(data: dict[str, Any]) -> str:
    """``vm-agentctl restart-unhealthy``: per-container results and totals."""
    rows = [[r["name"], r["result"], f"{r['took_s']:.1f} s",
             r.get("reason") or r.get("error") or ""] for r in data["results"]]
    totals = (f"{data['restarted']} restarted, {data['failed']} failed, "
              f"{data['skipped']} skipped")
    return (clifmt.table(rows, ["name", "result", "took", "why"]) + "\n" if rows else "") + totals
