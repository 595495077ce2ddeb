"""``vm-agentctl trend`` rendering: per series its latest, min, max and mean, and the projection."""

from __future__ import annotations

from typing import Any

#: How each kind's values read (bytes in decimal GB, as clifmt prints them).
_UNITS = {"disk": "%", "steal": "%", "memory": "GB", "containers": "", "io": "MB/s"}
_SCALE = {"memory": 1e9, "io": 1e6}


def _fmt(kind: str, value: float) -> str:
    unit = _UNITS.get(kind, "")
    return f"{value / _SCALE.get(kind, 1):.2f} {unit}".rstrip()


def trend(d: dict[str, Any]) -> str:
    """Text for a ``GET /v1/metrics/trend/{kind}`` reply."""
    kind = d["kind"]
    lines = [f"{kind} over {d['range']} (step {d['step_s']} s)"]
    if d.get("note"):
        lines.append(d["note"])
    for s in d["series"]:
        values = [v for _t, v in s["points"]]
        if not values:
            lines.append(f"  {s['name']}: no points")
            continue
        lines.append(f"  {s['name']}: latest {_fmt(kind, values[-1])}, min "
                     f"{_fmt(kind, min(values))}, max {_fmt(kind, max(values))}, mean "
                     f"{_fmt(kind, sum(values) / len(values))} ({len(values)} points)")
    proj = d.get("projection")
    if proj:
        lines.append(f"projection: {proj['text']}")
        lines += [f"  {m['text']}" for m in proj.get("mounts", [])]
    return "\n".join(lines)
