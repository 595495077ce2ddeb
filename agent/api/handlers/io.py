"""Handler for ``GET /v1/io``: per-container disk-write rates from the io sampler's cache."""

from __future__ import annotations

from typing import Any

from agent.api.params import NoParams
from agent.api.registry import Call
from agent.errors import Internal


async def io(call: Call[NoParams]) -> list[dict[str, Any]]:
    """``[{name, id, write_bytes_per_s, projected_bytes_per_day, level, window_s, source}]``.

    Worst first (CRIT, WARN, OK; then by projected bytes/day).  A container is
    listed once the sampler has two readings of its cgroup (one sampling
    interval after it was first seen or restarted).  Raises Internal when the
    daemon has no io sampler.
    """
    sampler = call.services.io
    if sampler is None:
        raise Internal("io sampler not configured")
    return [row.to_wire() for row in await sampler.latest()]
