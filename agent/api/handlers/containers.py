"""Handlers for the container commands (PROTOCOL.md ``/v1/containers...``).

Names are checked against Docker's name pattern (length-bounded) by the
params layer before any Docker call.  Docker down is 503
``upstream_unavailable`` (details.upstream ``docker``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from agent.api.params import NoParams, param
from agent.api.registry import Call
from agent.config import CONTAINER_NAME_PATTERN
from agent.containers import operator
from agent.containers.model import Container, newest_checks, rfc3339, to_wire
from agent.containers.watchdog import watchdog_status
from agent.containers.watchdog_run import WatchdogDeps
from agent.errors import UpstreamUnavailable

FILTERS = ("all", "unhealthy", "no-memory-limit")
MAX_NAME = 255


@dataclass(frozen=True)
class ListParams:
    filter: str = param("all", choices=FILTERS)
    stack: str | None = param(None, max_len=MAX_NAME, pattern=CONTAINER_NAME_PATTERN)


@dataclass(frozen=True)
class NameParams:
    name: str = param(max_len=MAX_NAME, pattern=CONTAINER_NAME_PATTERN)


@dataclass(frozen=True)
class LogsParams:
    name: str = param(max_len=MAX_NAME, pattern=CONTAINER_NAME_PATTERN)
    tail: int = param(50, min=1, max=500)


def _deps(call: Call[Any]) -> WatchdogDeps:
    service = getattr(call.services, "watchdog", None)
    if service is None:
        raise UpstreamUnavailable("docker", "the container service is not running")
    deps: WatchdogDeps = service.deps
    return deps


async def _statuses(deps: WatchdogDeps, containers: list[Container]) -> dict[str, Any]:
    now = deps.clock()
    history = await asyncio.to_thread(deps.history.load, [c.id for c in containers], now=now,
                                      window_s=deps.config.window_s)
    return {c.id: watchdog_status(c, history[c.id], now, deps.config) for c in containers}


async def list_containers(call: Call[ListParams]) -> list[dict[str, Any]]:
    """Rows ``{name, id, stack, image, image_created_at, state, health, health_since,
    uptime_s, restart_count, memory_bytes, memory_limit_bytes, oom_killed, watchdog, ...}``
    sorted by name; ``memory_bytes`` from the cgroup (null when not running)."""
    deps, p = _deps(call), call.params
    found = await deps.inventory.containers(stack=p.stack,
                                            unhealthy_only=p.filter == "unhealthy")
    if p.filter == "no-memory-limit":
        found = [c for c in found if c.memory_limit_bytes == 0]
    statuses, now = await _statuses(deps, found), deps.clock()
    return [to_wire(c, now, statuses[c.id]) for c in found]


async def unhealthy(call: Call[NoParams]) -> list[dict[str, Any]]:
    """Running unhealthy containers: ``{name, id, stack, unhealthy_since, failing_streak,
    last_checks (newest 3, newest first), restart_count, watchdog}``."""
    deps = _deps(call)
    found = await deps.inventory.containers(unhealthy_only=True)
    statuses = await _statuses(deps, found)
    return [_unhealthy_row(c, statuses[c.id]) for c in found]


def _unhealthy_row(c: Container, status: dict[str, Any]) -> dict[str, Any]:
    since, estimated = c.health_since()
    return {"name": c.name, "id": c.id, "stack": c.stack, "unhealthy_since": rfc3339(since),
            "unhealthy_since_estimated": estimated, "failing_streak": c.failing_streak,
            "last_checks": newest_checks(c, 3), "restart_count": c.restart_count,
            "watchdog": status}


async def logs(call: Call[LogsParams]) -> dict[str, Any]:
    """``{name, id, tail, lines: [{time, text}]}``: the last ``tail`` lines (1-500, default
    50), stdout and stderr, oldest first."""
    deps = _deps(call)
    container = await deps.inventory.inspect(call.params.name)
    lines = await deps.inventory.logs(container, call.params.tail)
    return {"name": container.name, "id": container.id, "tail": call.params.tail,
            "lines": lines}


async def health(call: Call[NameParams]) -> dict[str, Any]:
    """``{name, id, state, health, health_since, failing_streak, healthcheck, log}``; ``log``
    is Docker's health-check log (at most 5), newest first."""
    c = await _deps(call).inventory.inspect(call.params.name)
    since, estimated = c.health_since()
    return {"name": c.name, "id": c.id, "state": c.state, "health": c.health,
            "health_since": rfc3339(since), "health_since_estimated": estimated,
            "failing_streak": c.failing_streak,
            "healthcheck": c.healthcheck.to_wire() if c.healthcheck else None,
            "log": newest_checks(c, len(c.health_log))}


async def restart(call: Call[NameParams]) -> dict[str, Any]:
    """Restart one container: 404 unknown, 403 protected, 423 hold, 429 over budget."""
    return await operator.restart_one(_deps(call), call.params.name)


async def restart_unhealthy(call: Call[NoParams]) -> dict[str, Any]:
    """``{results: [...], restarted, failed, skipped}``; 423 while a hold is active."""
    results = await operator.restart_unhealthy(_deps(call))
    counts = {k: sum(1 for r in results if r["result"] == k)
              for k in ("restarted", "failed", "skipped")}
    return {"results": results, **counts}
