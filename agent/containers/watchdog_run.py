"""The watchdog's effects: observe, :func:`decide`, execute, record, audit, alert.

:func:`watchdog_pass` is what the job runner (``vm-agentctl run watchdog``),
the event trigger and the backstop timer call.  Passes decide one at
a time (``deps.lock``; the API's restarts take it too) and restart after it
(``deps.restarting`` holds the ids in flight), so one unhealthy container is
never restarted twice at once and a slow stop holds up no other container.

A pass: one ``GET /containers/json?filters=health=unhealthy``, inspects of
those plus of containers whose breaker is tripped (concurrent, bounded;
an unhealthy one that is opted out or protected, breaker not tripped, is
decided on its list entry alone: rules 2-3 skip it whatever an inspect
says), one read of the history, :func:`decide`, then each action, restarts at most
``max_parallel_restarts`` at a time.  A failed, timed-out or vanished (404)
container never aborts the pass.  Every acting decision and every skip of
an unhealthy container is audited (``VMAGENT_ACTION=watchdog.*``); every
restart is recorded (container, id, FailingStreak, result, took) and raised
as an :class:`AlertEvent`.  A dry-run decides and returns the actions only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.audit import PRIORITY_ERR, PRIORITY_INFO, PRIORITY_WARNING, Auditor
from agent.config import WatchdogConfig
from agent.containers.history import RestartRecord, RestartResult, Trigger, WatchdogHistory
from agent.containers.inventory import Inventory
from agent.containers.model import Container, from_listed
from agent.containers.stops import StopLog, being_stopped
from agent.containers.watchdog import (
    Action,
    GiveUp,
    History,
    Restart,
    Resume,
    Snapshot,
    action_wire,
    decide,
    skipped_by_list,
)
from agent.containers.watchdog_report import ActionResult as ActionResult
from agent.containers.watchdog_report import WatchdogReport as WatchdogReport
from agent.errors import AgentError, NotFound
from agent.hold import HoldStore
from agent.notify.events import AlertEvent, AlertLevel, AlertLog

log = logging.getLogger("vm-agent")


@dataclass
class WatchdogDeps:
    """What a pass needs; ``clock`` gives Unix seconds (tests may shift it)."""

    inventory: Inventory
    history: WatchdogHistory
    alerts: AlertLog
    auditor: Auditor
    hold: HoldStore
    config: WatchdogConfig
    clock: Callable[[], float] = time.time
    max_parallel_restarts: int = 4
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Ids with a restart in flight (claimed under ``lock``, dropped once recorded).
    restarting: set[str] = field(default_factory=set)
    stops: StopLog = field(default_factory=StopLog)


async def watchdog_pass(deps: WatchdogDeps, *, dry_run: bool) -> WatchdogReport:
    """One watchdog pass (see the module docstring): :func:`begin_pass`, then its restarts.

    Raises UpstreamUnavailable when Docker cannot be listed; per-container
    failures are reported in ``results`` (restarts last), never raised.
    """
    _, finish = await begin_pass(deps, dry_run=dry_run)
    return await finish()


async def begin_pass(deps: WatchdogDeps, *, dry_run: bool
                     ) -> tuple[Sequence[Action], Callable[[], Awaitable[WatchdogReport]]]:
    """Observe, decide and do the quick actions under ``deps.lock`` (waits for another
    pass's decisions); returns the actions and the rest: the restarts, then the report.

    The lock does not cover the restarts (a 240 s StopTimeout must not hold up
    other containers); their ids stay in ``deps.restarting`` until recorded, so
    no pass restarts one twice.  Raises UpstreamUnavailable as watchdog_pass.
    """
    async with deps.lock:
        started, t0 = deps.clock(), time.monotonic()
        snapshot, history = await observe(deps, prune=not dry_run)
        snapshot = replace(snapshot, restarting=frozenset(deps.restarting))
        now = deps.clock()
        actions = decide(snapshot, history, now, deps.config)
        if stopping := await _stopping(deps, snapshot, actions):
            snapshot = replace(snapshot, being_stopped=stopping)
            actions = decide(snapshot, history, now, deps.config)
        restarts = [] if dry_run else [a for a in actions if isinstance(a, Restart)]
        deps.restarting.update(a.container_id for a in restarts)
        quick = [] if dry_run else await _execute_all(
            deps, [a for a in actions if not isinstance(a, Restart)])

    async def finish() -> WatchdogReport:
        try:
            results = [*quick, *await _execute_all(deps, restarts)]
        finally:  # also when cancelled before a restart began: no claim outlives its pass
            deps.restarting.difference_update(a.container_id for a in restarts)
        return WatchdogReport(dry_run, started, time.monotonic() - t0, snapshot.hold_active,
                              len(snapshot.containers), actions, results)

    return actions, finish


async def _stopping(deps: WatchdogDeps, snapshot: Snapshot,
                    actions: Sequence[Action]) -> frozenset[str]:
    """The ids among the decided restarts a stop is in progress for (asked only then)."""
    ids = {a.container_id for a in actions if isinstance(a, Restart)}
    return await being_stopped(deps.inventory.engine, deps.stops,
                               (c for c in snapshot.containers if c.id in ids))


async def observe(deps: WatchdogDeps, *, prune: bool) -> tuple[Snapshot, dict[str, History]]:
    """The snapshot (unhealthy + tripped containers) and their history.

    Docker calls on the loop, then the store, cgroup and hold-file reads and
    the prunes in one worker-thread hop (each hop is a GIL hand-over the loop
    waits on, and a worker running beside the loop stretches its chunks).  The
    tripped ids are read in that hop; only when one of them was not inspected
    yet (not unhealthy now, or decided on its list entry) is it inspected and a
    second hop settles.
    """
    listed = [from_listed(entry) for entry in await deps.inventory.unhealthy_listed()]
    by_list = [c for c in listed if skipped_by_list(c, deps.config)]
    known = {c.id for c in by_list}
    raws = await deps.inventory.inspect_raw(c.id for c in listed if c.id not in known)
    now = deps.clock()
    settled = await asyncio.to_thread(_settle, deps, by_list, raws, prune=prune, now=now)
    if isinstance(settled, tuple):
        return settled
    tripped = settled  # some tripped ids still need their inspect (the breaker's Resume)
    raws = [*raws, *await deps.inventory.inspect_raw(set(tripped) - known_ids(raws))]
    now = deps.clock()
    return await asyncio.to_thread(_snapshot, deps, by_list, raws, tripped, prune=prune, now=now)


def known_ids(raws: Sequence[Mapping[str, Any]]) -> set[str]:
    """The ids of inspect answers."""
    return {str(raw["Id"]) for raw in raws}


def _settle(deps: WatchdogDeps, by_list: Sequence[Container], raws: Sequence[Mapping[str, Any]],
            *, prune: bool, now: float) -> tuple[Snapshot, dict[str, History]] | list[str]:
    """(Worker thread.)  :func:`_snapshot` with the tripped ids read now; or those ids
    when one of them has no inspect answer in ``raws`` (inspect it, then :func:`_snapshot`)."""
    tripped = deps.history.tripped_ids()
    if not set(tripped) <= known_ids(raws):
        return tripped
    return _snapshot(deps, by_list, raws, tripped, prune=prune, now=now)


def _snapshot(deps: WatchdogDeps, by_list: Sequence[Container],
              raws: Sequence[Mapping[str, Any]], tripped: Sequence[str], *, prune: bool,
              now: float) -> tuple[Snapshot, dict[str, History]]:
    """(Worker thread.)  The snapshot and the history of its containers: ``by_list`` (their
    breaker not tripped) and the models of ``raws``; prunes breakers of removed ones."""
    breakers = set(tripped)
    containers = [*(c for c in by_list if c.id not in breakers),
                  *(deps.inventory.model(raw) for raw in raws)]
    seen = {c.id for c in containers}
    if prune:
        for gone in breakers - seen:  # removed containers: their breaker goes too
            deps.history.reset(gone)
    history = deps.history.load(seen, now=now, window_s=deps.config.window_s)
    return Snapshot(containers, hold_active=deps.hold.get().active), history


async def _execute_all(deps: WatchdogDeps, actions: Sequence[Action]) -> list[ActionResult]:
    limit = asyncio.Semaphore(deps.max_parallel_restarts)

    async def bounded(action: Action) -> ActionResult:
        async with limit:
            return await _execute_safely(deps, action)

    return list(await asyncio.gather(*(bounded(a) for a in actions)))


async def _execute_safely(deps: WatchdogDeps, action: Action) -> ActionResult:
    try:
        return await _execute(deps, action)
    except Exception as exc:  # one container never aborts the pass
        log.exception("watchdog: %s of %s failed", action.kind, action.container)
        return ActionResult(action.container, action.container_id, action.kind, "failed",
                            error=str(exc)[:300] or repr(exc))


async def _execute(deps: WatchdogDeps, action: Action) -> ActionResult:
    if isinstance(action, Restart):
        return await restart_container(deps, action.container, action.container_id,
                                       stop_timeout_s=action.stop_timeout_s,
                                       failing_streak=action.failing_streak, trigger="watchdog")
    if isinstance(action, GiveUp):
        return await _give_up(deps, action)
    if isinstance(action, Resume):
        await asyncio.to_thread(deps.history.reset, action.container_id)
        _audit(deps, "watchdog.resume", action, f"watchdog resumes on {action.container}: "
               f"{action.reason}")
        return ActionResult(action.container, action.container_id, action.kind, "resumed")
    _audit(deps, "watchdog.skip", action, f"watchdog skipped unhealthy {action.container}: "
           f"{action.reason}")
    return ActionResult(action.container, action.container_id, action.kind, "skipped")


async def restart_container(deps: WatchdogDeps, name: str, container_id: str, *,
                            stop_timeout_s: int, failing_streak: int,
                            trigger: Trigger) -> ActionResult:
    """Restart one container by id, record it, audit it; alert when the watchdog did it.
    Drops ``container_id`` from ``deps.restarting`` (the caller's claim) once recorded.

    ``result`` is ``restarted``, ``failed`` (``error`` says why) or ``vanished``
    (404: removed meanwhile, recorded but not counted against the budget).
    """
    try:
        rec = await _restart_and_record(deps, name, container_id, stop_timeout_s=stop_timeout_s,
                                        failing_streak=failing_streak, trigger=trigger)
    finally:
        deps.restarting.discard(container_id)
    _report_restart(deps, rec)
    return ActionResult(name, container_id, "restart",
                        {"ok": "restarted"}.get(rec.result, rec.result), round(rec.took_s, 3),
                        rec.error)


async def _restart_and_record(deps: WatchdogDeps, name: str, container_id: str, *,
                              stop_timeout_s: int, failing_streak: int,
                              trigger: Trigger) -> RestartRecord:
    at, t0 = deps.clock(), time.monotonic()
    result: RestartResult = "ok"
    error = None
    try:
        await deps.inventory.restart(container_id, stop_timeout_s=stop_timeout_s,
                                     margin_s=deps.config.stop_timeout_margin_s)
    except NotFound:
        result, error = "vanished", "removed before it could be restarted"
    except AgentError as exc:
        result, error = "failed", exc.message
    rec = RestartRecord(at, name, container_id, trigger, failing_streak, result,
                        time.monotonic() - t0, error)
    await asyncio.to_thread(deps.history.record_restart, rec)
    return rec


def _report_restart(deps: WatchdogDeps, rec: RestartRecord) -> None:
    text = {"ok": f"restarted {rec.container} (FailingStreak {rec.failing_streak}) in "
                  f"{rec.took_s:.1f} s",
            "failed": f"restart of {rec.container} failed after {rec.took_s:.1f} s: {rec.error}",
            "vanished": f"{rec.container} vanished before its restart; skipped"}[rec.result]
    prefix = "watchdog " if rec.trigger == "watchdog" else "operator "
    priority = PRIORITY_ERR if rec.result == "failed" else PRIORITY_WARNING
    deps.auditor.action(f"{rec.trigger}.restart", message=prefix + text, priority=priority,
                        container=rec.container, container_id=rec.container_id,
                        failing_streak=rec.failing_streak, result=rec.result,
                        took_s=f"{rec.took_s:.3f}", trigger=rec.trigger)
    if rec.trigger == "watchdog" and rec.result != "vanished":
        level: AlertLevel = "CRIT" if rec.result == "failed" else "WARN"
        deps.alerts.emit(AlertEvent(f"watchdog.restart_{rec.result}", rec.container, level,
                                    "watchdog " + text), at=rec.at)


async def _give_up(deps: WatchdogDeps, action: GiveUp) -> ActionResult:
    now = deps.clock()
    await asyncio.to_thread(deps.history.trip, action.container_id, action.container, at=now,
                            restart_count=action.restart_count)
    text = (f"restart loop, giving up: {action.container} was restarted "
            f"{action.restarts_in_window} times in {action.window_s:g} s and is unhealthy "
            f"again; no more restarts until it is healthy or an operator restarts it")
    _audit(deps, "watchdog.give_up", action, text, priority=PRIORITY_ERR)
    deps.alerts.emit(AlertEvent("watchdog.gave_up", action.container, "CRIT", text), at=now)
    return ActionResult(action.container, action.container_id, action.kind, "gave_up")


def _audit(deps: WatchdogDeps, event: str, action: Action, message: str, *,
           priority: int | None = None) -> None:
    fields = {k: v for k, v in action_wire(action).items() if v is not None}
    fields["container_id"] = action.container_id
    deps.auditor.action(event, message=message, priority=priority or PRIORITY_INFO, **fields)
