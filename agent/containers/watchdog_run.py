"""The watchdog's effects: observe, :func:`decide`, execute, record, audit, alert.

:func:`watchdog_pass` is what the job runner (``vm-agentctl run watchdog``),
the event trigger and the backstop timer call.  Passes never overlap
(``deps.lock``; the API's restarts take it too), so one unhealthy container is
never restarted twice at once.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.audit import PRIORITY_ERR, PRIORITY_INFO, PRIORITY_WARNING, Auditor
from agent.config import WatchdogConfig
from agent.containers.history import RestartRecord, RestartResult, Trigger, WatchdogHistory
from agent.containers.inventory import Inventory
from agent.containers.model import Container, from_listed, rfc3339
from agent.containers.watchdog import (
    Action,
    GiveUp,
    History,
    Restart,
    Resume,
    Skip,
    Snapshot,
    action_wire,
    decide,
    skipped_by_list,
)
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


@dataclass(frozen=True)
class ActionResult:
    """What one action did: ``result`` is restarted, failed, vanished, skipped, gave_up or
    resumed; ``took_s`` seconds; ``error`` when it failed."""

    container: str
    container_id: str
    kind: str
    result: str
    took_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class WatchdogReport:
    """One pass: ``started_at`` Unix seconds, ``took_s`` seconds, ``examined`` containers
    decided on (inspected, or listed and skipped by rule 2 or 3), the decided ``actions``
    and (unless ``dry_run``) their ``results``."""

    dry_run: bool
    started_at: float
    took_s: float
    hold_active: bool
    examined: int
    actions: Sequence[Action]
    results: Sequence[ActionResult] = ()

    @property
    def status(self) -> str:
        """``ok``, or ``partial`` when a restart failed."""
        return "partial" if any(r.result == "failed" for r in self.results) else "ok"

    @property
    def recheck_after_s(self) -> float | None:
        """The soonest time (seconds from the pass) a Skip could turn into a restart."""
        due = [a.recheck_after_s for a in self.actions
               if isinstance(a, Skip) and a.recheck_after_s is not None]
        return min(due) if due else None

    def to_wire(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "started_at": rfc3339(self.started_at),
                "took_s": round(self.took_s, 3), "hold_active": self.hold_active,
                "examined": self.examined, "status": self.status,
                "actions": [action_wire(a) for a in self.actions],
                "results": [asdict(r) for r in self.results]}


async def watchdog_pass(deps: WatchdogDeps, *, dry_run: bool) -> WatchdogReport:
    """One watchdog pass (see the module docstring); waits for a running pass to end.

    Raises UpstreamUnavailable when Docker cannot be listed; per-container
    failures are reported in ``results``, never raised.
    """
    async with deps.lock:
        started, t0 = deps.clock(), time.monotonic()
        snapshot, history = await observe(deps, prune=not dry_run)
        actions = decide(snapshot, history, deps.clock(), deps.config)
        results = [] if dry_run else await _execute_all(deps, actions)
        return WatchdogReport(dry_run, started, time.monotonic() - t0, snapshot.hold_active,
                              len(snapshot.containers), actions, results)


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

    ``result`` is ``restarted``, ``failed`` (``error`` says why) or ``vanished``
    (404: removed meanwhile, recorded but not counted against the budget).
    """
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
    took = time.monotonic() - t0
    rec = RestartRecord(at, name, container_id, trigger, failing_streak, result, took, error)
    await asyncio.to_thread(deps.history.record_restart, rec)
    _report_restart(deps, rec)
    return ActionResult(name, container_id, "restart",
                        {"ok": "restarted"}.get(result, result), round(took, 3), error)


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
