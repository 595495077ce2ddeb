"""Restarts an operator asks for (``POST /v1/containers/{name}/restart`` and
``/v1/containers/restart-unhealthy``), under the same rules as the watchdog's:

- an unknown name is NotFound (404); a name in ``watchdog.protected`` is
  Forbidden (403); an active maintenance hold is Locked (423);
- the restart budget counts every restart the agent made of that container
  id (watchdog and operator): past ``max_restarts`` in ``window_s`` the
  restart is RateLimited (429, ``retry_after_s``);
- a restart done here resets a tripped breaker (the operator restarted it);
- a container with a restart in flight (watchdog or operator) is Conflict (409)
  for ``restart``, skipped by ``restart-unhealthy``, which also skips one a
  ``docker stop`` / ``compose down`` is in progress for (agent.containers.stops).

Both check under ``deps.lock`` (as a watchdog pass decides) and restart after
releasing it, the ids claimed in ``deps.restarting`` meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agent.containers.model import Container
from agent.containers.stops import being_stopped
from agent.containers.watchdog import History, retry_after_s
from agent.containers.watchdog_run import ActionResult, WatchdogDeps, restart_container
from agent.errors import Conflict, Forbidden, NotFound, RateLimited, UpstreamUnavailable


async def restart_one(deps: WatchdogDeps, name: str) -> dict[str, Any]:
    """Restart ``name``; ``{name, id, result, took_s, breaker_reset}``.

    Raises NotFound, Forbidden, Locked, RateLimited, Conflict as above, and
    UpstreamUnavailable when Docker failed the restart (it is still recorded).
    """
    async with deps.lock:
        container = await deps.inventory.inspect(name)
        if container.name in deps.config.protected:
            raise Forbidden(f"{name} is protected (watchdog.protected); not restarted",
                            {"container": name})
        deps.hold.check(f"restart of {name}")
        if container.id in deps.restarting:
            raise Conflict(f"a restart of {name} is in progress", {"container": name})
        history = await _history_of(deps, container)
        wait = retry_after_s(history, deps.clock(), deps.config)
        if wait is not None:
            raise _over_budget(deps, name, wait)
        deps.restarting.add(container.id)  # the restart runs after the lock is released
    result = await _restart(deps, container)  # drops the claim, also when cancelled
    if result.result == "vanished":
        raise NotFound(f"{name} was removed before it could be restarted", {"container": name})
    if result.result == "failed":
        raise UpstreamUnavailable("docker", f"restart of {name} failed: {result.error}")
    return {**_wire(result), "breaker_reset": history.gave_up_at is not None}


async def restart_unhealthy(deps: WatchdogDeps) -> list[dict[str, Any]]:
    """Restart every running unhealthy container that is neither protected nor opted out
    (label ``vm-agent.watchdog=off``), within budget.

    Per container ``{name, id, result, took_s, error, reason, retry_after_s}``;
    ``result`` is restarted, failed, vanished or skipped (``reason`` says why).
    Raises Locked when a hold is active, UpstreamUnavailable when Docker is down.
    """
    deps.hold.check("restart-unhealthy")
    async with deps.lock:
        containers = await deps.inventory.containers(unhealthy_only=True)
        stopping = await being_stopped(deps.inventory.engine, deps.stops, containers)
        checked = [(c, await _refusal(deps, c, stopping=c.id in stopping)) for c in containers]
        deps.restarting.update(c.id for c, refused in checked if refused is None)
    limit = asyncio.Semaphore(deps.max_parallel_restarts)

    async def one(c: Container, refused: dict[str, Any] | None) -> dict[str, Any]:
        if refused is not None:
            return refused
        try:
            async with limit:
                return _wire(await _restart(deps, c))
        finally:  # cancelled while waiting: the claim goes too
            deps.restarting.discard(c.id)

    return list(await asyncio.gather(*(one(c, refused) for c, refused in checked)))


async def _refusal(deps: WatchdogDeps, c: Container, *, stopping: bool) -> dict[str, Any] | None:
    """The skipped row of ``c``, or None when it is to be restarted."""
    if c.name in deps.config.protected:
        return _skipped(c, "protected (watchdog.protected)")
    if c.opted_out:
        return _skipped(c, "opted out (label vm-agent.watchdog=off)")
    if c.id in deps.restarting:
        return _skipped(c, "restart in progress")
    if stopping:
        return _skipped(c, "being stopped (docker stop or compose down in progress)")
    wait = retry_after_s(await _history_of(deps, c), deps.clock(), deps.config)
    if wait is not None:
        return {**_skipped(c, "restart budget spent"), "retry_after_s": round(wait, 3)}
    return None


async def _restart(deps: WatchdogDeps, c: Container) -> ActionResult:
    result = await restart_container(deps, c.name, c.id, stop_timeout_s=c.stop_timeout_s,
                                     failing_streak=c.failing_streak, trigger="operator")
    if result.result == "restarted":
        await asyncio.to_thread(deps.history.reset, c.id)
    return result


async def _history_of(deps: WatchdogDeps, c: Container) -> History:
    loaded = await asyncio.to_thread(deps.history.load, [c.id], now=deps.clock(),
                                     window_s=deps.config.window_s)
    return loaded[c.id]


def _over_budget(deps: WatchdogDeps, name: str, wait: float) -> RateLimited:
    cfg = deps.config
    return RateLimited(f"{name} was restarted {cfg.max_restarts} times in the last "
                       f"{cfg.window_s:g} s (watchdog.max_restarts); try again in "
                       f"{wait:.0f} s", wait, container=name)


def _wire(r: ActionResult) -> dict[str, Any]:
    return {"name": r.container, "id": r.container_id, "result": r.result,
            "took_s": r.took_s, "error": r.error}


def _skipped(c: Container, reason: str) -> dict[str, Any]:
    return {"name": c.name, "id": c.id, "result": "skipped", "took_s": 0.0, "error": None,
            "reason": reason}
