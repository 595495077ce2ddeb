"""What wakes the watchdog: Docker's event stream, rechecks, and the backstop timer.

:class:`DockerEvents` follows ``GET /events`` (filters ``type=container`` and
the events in :data:`EVENT_FILTERS`) with aiodocker on the event loop, hands
each event to its callback, and reconnects with exponential backoff (0.5 s doubling up to
``backoff_max_s``) when the engine goes away, e.g. during its restart.

:class:`WatchdogService` runs the passes: a ``health_status`` event or a
(re)connect wakes a pass after ``debounce_s`` (a burst gives one pass); a
Skip that may turn into a restart later (FailingStreak still short, grace
period) schedules a recheck at that time; a backstop pass runs every
``backstop_interval_s`` whatever happens (events can be lost).  An ``oom``
event is recorded in the store and raised as an alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import aiohttp

from agent.audit import Auditor
from agent.config import Config
from agent.containers.engine import DockerEngine
from agent.containers.history import WatchdogHistory
from agent.containers.inventory import Inventory
from agent.containers.watchdog_report import WatchdogReport, recheck_after_s
from agent.containers.watchdog_run import WatchdogDeps, begin_pass
from agent.hold import HoldStore
from agent.notify.events import AlertEvent, AlertLog
from agent.store import Store

log = logging.getLogger("vm-agent")

#: health_status wakes a pass, oom is recorded, kill may start a stop (agent.containers.stops);
#: every one of them drops the container's cached inspect (inventory.InspectCache).
EVENT_FILTERS = {"type": ["container"],
                 "event": ["health_status", "oom", "start", "die", "restart", "update",
                           "destroy", "rename", "pause", "unpause", "kill"]}
RECHECK_SLACK_S = 0.5  # a health probe's own duration, plus scheduling
#: Seconds before the same reconnect reason is logged again (Docker down for long: quiet).
REPEAT_LOG_S = 600


class DockerEvents:
    """Follows the engine at ``host``; ``on_event(event)`` and ``on_connect()`` run in the loop."""

    def __init__(self, host: str, *, on_event: Callable[[Mapping[str, Any]], None],
                 on_connect: Callable[[], None], on_disconnect: Callable[[], None],
                 backoff_max_s: float = 10.0, connect_timeout_s: float = 5.0) -> None:
        self.host = host
        self.on_event = on_event
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        self.connects = 0
        self._task: asyncio.Task[None] | None = None
        self._last_logged: tuple[str, float] | None = None  # (reason, monotonic s)

    def start(self) -> None:
        """Start following (returns at once)."""
        self._task = asyncio.create_task(self._run(), name="docker-events")

    async def stop(self) -> None:
        """Close the stream and wait for the follower to end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            began = time.monotonic()
            try:
                await self._follow()
                self.log_retry("the stream ended", backoff)
            except Exception as exc:
                self.log_retry(str(exc)[:200] or repr(exc), backoff)
            self.on_disconnect()
            if time.monotonic() - began > 30:
                backoff = 0.5  # it had been working: start again from a short wait
                self._last_logged = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)

    def log_retry(self, reason: str, backoff_s: float) -> None:
        """Log a failed or ended stream: the first time, when the reason changes, and
        then at most every ``REPEAT_LOG_S`` (Docker stopped for a day is one line an
        interval, not one every ``backoff_max_s``)."""
        now, last = time.monotonic(), self._last_logged
        if last is not None and last[0] == reason and now - last[1] < REPEAT_LOG_S:
            return
        self._last_logged = (reason, now)
        log.info("docker events: %s; reconnecting in %.1f s (the same reason is logged "
                 "again at most every %d s)", reason, backoff_s, REPEAT_LOG_S)

    async def _follow(self) -> None:
        """Connect (within ``connect_timeout_s``), then hand every event to ``on_event``
        until the stream ends.  A client of its own: the stream holds its connection."""
        import aiodocker

        async with aiodocker.Docker(url=self.host, timeout=aiohttp.ClientTimeout()) as docker, \
                asyncio.timeout(self.connect_timeout_s) as deadline:
            # aiodocker's events.run() gives no hook for the moment the stream is
            # established (on_connect turns the inspect cache on): its _query does.
            params = {"filters": json.dumps(EVENT_FILTERS)}
            async with docker._query("events", params=params, timeout=None) as response:
                deadline.reschedule(None)
                self.connects += 1
                self.on_connect()
                async for line in response.content:
                    if line.strip():
                        self.on_event(json.loads(line))


class WatchdogService:
    """Runs watchdog passes when woken (see the module docstring); ``host`` is Docker's."""

    def __init__(self, deps: WatchdogDeps, *, host: str, follow_events: bool,
                 backstop_interval_s: float, debounce_s: float = 0.2,
                 first_pass_delay_s: float = 1.0) -> None:
        self.deps = deps
        self.backstop_interval_s = backstop_interval_s
        self.debounce_s = debounce_s
        self.first_pass_delay_s = first_pass_delay_s
        self.events = DockerEvents(
            host, on_event=self._on_event, on_connect=self._on_connect,
            on_disconnect=lambda: deps.inventory.cache.follow(connected=False),
        ) if follow_events else None
        self.passes = 0
        self.last_report: WatchdogReport | None = None
        self.last_error: str | None = None
        self._due = float("inf")
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start the pass loop (first pass after ``first_pass_delay_s``) and the event stream."""
        self.wake("start", delay_s=self.first_pass_delay_s)
        self._task = asyncio.create_task(self._loop(), name="watchdog")
        if self.events is not None:
            self.events.start()

    async def stop(self) -> None:
        """Stop following events and the loop (running passes are cancelled)."""
        if self.events is not None:
            await self.events.stop()
        for task in [self._task, *list(self._side_tasks)]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def wake(self, reason: str, *, delay_s: float = 0.0) -> None:
        """Ask for a pass in ``delay_s`` seconds (an earlier request wins)."""
        due = time.monotonic() + delay_s
        if due < self._due:
            log.debug("watchdog: pass in %.1f s (%s)", delay_s, reason)
            self._due = due
            self._changed.set()

    async def _loop(self) -> None:
        while True:
            await self._wait_due()
            await self._one_pass()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _wait_due(self) -> None:
        while (left := self._due - time.monotonic()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 3600)):
                    await self._changed.wait()
        self._due = time.monotonic() + self.backstop_interval_s

    async def _one_pass(self) -> None:
        """Decide (awaited), then restart in a task of its own: the next pass must not
        wait for a slow stop (a 240 s StopTimeout); restarts in flight are skipped."""
        try:
            actions, finish = await begin_pass(self.deps, dry_run=False)
        except Exception as exc:  # Docker down: the reconnect or the backstop wakes us
            self._failed(exc)
            return
        if (recheck := recheck_after_s(actions)) is not None:
            self.wake("recheck", delay_s=recheck + RECHECK_SLACK_S)
        self._spawn(self._finish(finish))

    async def _finish(self, finish: Callable[[], Awaitable[WatchdogReport]]) -> None:
        try:
            report = await finish()
        except Exception as exc:
            self._failed(exc)
            return
        self.passes += 1
        self.last_report, self.last_error = report, None

    def _failed(self, exc: Exception) -> None:
        self.last_error = str(exc)[:300]
        log.warning("watchdog pass failed: %s", self.last_error)

    def _on_connect(self) -> None:
        self.deps.inventory.cache.follow(connected=True)
        self.wake("docker events (re)connected", delay_s=self.debounce_s)

    def _on_event(self, event: Mapping[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        self.deps.inventory.cache.forget(str((event.get("Actor") or {}).get("ID") or ""))
        self.deps.stops.note(event)  # kill: a docker stop may be in progress
        if action.startswith("health_status"):
            self.wake(action, delay_s=self.debounce_s)
        elif action == "oom":
            self._spawn(self._record_oom(event))

    async def _record_oom(self, event: Mapping[str, Any]) -> None:
        actor = event.get("Actor") or {}
        cid = str(actor.get("ID") or event.get("id") or "")
        name = str((actor.get("Attributes") or {}).get("name") or cid[:12])
        at = float(event.get("timeNano") or 0) / 1e9 or self.deps.clock()
        try:
            await asyncio.to_thread(self.deps.history.record_oom, name, cid, at=at)
            text = f"{name} ({cid[:12]}): a process was OOM-killed (out of memory in its cgroup)"
            await asyncio.to_thread(self.deps.alerts.emit,
                                    AlertEvent("container.oom", name, "WARN", text), at=at)
        except Exception:
            log.exception("recording the OOM kill of %s failed", name)


def build_watchdog_service(cfg: Config, engine: DockerEngine, *, store: Store, alerts: AlertLog,
                           auditor: Auditor, hold: HoldStore) -> WatchdogService:
    """The daemon's watchdog: inventory over ``engine``, history in ``store``, config from
    ``cfg.watchdog`` / ``cfg.docker.cgroup_root`` / ``cfg.sampling.proc_root``."""
    inventory = Inventory(engine, cgroup_root=cfg.docker.cgroup_root,
                          proc_root=cfg.sampling.proc_root)
    deps = WatchdogDeps(inventory=inventory, history=WatchdogHistory(store), alerts=alerts,
                        auditor=auditor, hold=hold, config=cfg.watchdog)
    return WatchdogService(deps, host=engine.host, follow_events=cfg.watchdog.events,
                           backstop_interval_s=cfg.watchdog.backstop_interval_s)
