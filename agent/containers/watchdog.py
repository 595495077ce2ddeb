"""The watchdog's decision: a pure function of (snapshot, history, now, config) -> actions.

Docker's restart policies never act on health, so a container whose process
lives but whose HEALTHCHECK fails stays ``unhealthy`` for ever.  A running
container is restarted only when every rule holds, checked in this order
(the first that fails gives a :class:`Skip` with its reason):

1. it is ``running`` and Docker says ``unhealthy`` (anything else: no action,
   so manual stops and ``docker compose down`` are never undone), and no stop is
   in progress (``Snapshot.being_stopped``, see :mod:`agent.containers.stops`:
   a restart sent while ``docker stop`` waits would start it again) and no
   restart of it is in flight (``Snapshot.restarting``);
2. not opted out (label ``vm-agent.watchdog=off``);
3. not in ``watchdog.protected``;
4. FailingStreak >= ``failures_before_restart`` and the newest that many
   health-log entries (Docker keeps 5) all failed (exit code != 0);
5. the breaker has not tripped (see below);
6. past its grace period: start_period + interval x retries of its own
   HEALTHCHECK (Docker's defaults when unset: 0 s, 30 s, 3) since its last
   start or agent restart, whichever is later (one dated more than a grace
   period ahead of ``now``, from before the clock stepped back, is ignored);
7. no maintenance hold is active ("hold active");
8. within budget: fewer than ``max_restarts`` agent restarts of this
   container id in the last ``window_s`` (restarts dated up to a window ahead,
   from before the clock stepped back, count too).  Past it: one :class:`GiveUp`
   ("restart loop, giving up"), then Skips until the breaker is reset.

The breaker resets (:class:`Resume`) when the container is healthy again,
or when it was started after the give-up by someone other than Docker's
restart policy (StartedAt later, RestartCount unchanged: an operator's
``docker restart``).  An operator restart through the agent resets it too
(the API handler clears it).  History is keyed by container **id**: a
container recreated by compose (same name, new id) starts clean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from agent.config import WatchdogConfig
from agent.containers.model import Container, Healthcheck, rfc3339


@dataclass(frozen=True)
class History:
    """What the agent did to one container id: ``restarts`` are Unix seconds of restarts it
    attempted (watchdog or operator), oldest first; ``gave_up_at`` is set while the breaker
    is tripped, with Docker's RestartCount at that moment."""

    restarts: tuple[float, ...] = ()
    gave_up_at: float | None = None
    gave_up_restart_count: int | None = None

    @property
    def last_restart_at(self) -> float | None:
        return max(self.restarts) if self.restarts else None


@dataclass(frozen=True)
class Snapshot:
    """The containers a pass looks at (inspected), whether a maintenance hold is active,
    and the ids a ``docker stop`` / ``compose down`` is in progress for."""

    containers: Sequence[Container]
    hold_active: bool = False
    being_stopped: frozenset[str] = frozenset()
    restarting: frozenset[str] = frozenset()  # ids with a restart in flight


@dataclass(frozen=True)
class Restart:
    container: str
    container_id: str
    failing_streak: int
    stop_timeout_s: int
    reason: str
    kind: str = "restart"


@dataclass(frozen=True)
class Skip:
    """No restart, for ``reason``; ``recheck_after_s``: when a new pass could decide otherwise."""

    container: str
    container_id: str
    reason: str
    recheck_after_s: float | None = None
    kind: str = "skip"


@dataclass(frozen=True)
class GiveUp:
    container: str
    container_id: str
    restarts_in_window: int
    window_s: float
    restart_count: int
    reason: str = "restart loop, giving up"
    kind: str = "give_up"


@dataclass(frozen=True)
class Resume:
    container: str
    container_id: str
    reason: str
    kind: str = "resume"


Action = Restart | Skip | GiveUp | Resume


def action_wire(action: Action) -> dict[str, Any]:
    """An action as JSON-able dict (``kind`` says which)."""
    return asdict(action)


def restarts_in_window(history: History, now: float, window_s: float) -> tuple[float, ...]:
    """The restarts in ``(now - window_s, now + window_s]``: one dated after ``now`` was
    recorded before the clock stepped back and still counts; one more than a window
    ahead is a clock fixed after running far ahead, and is ignored."""
    return tuple(t for t in history.restarts if now - window_s < t <= now + window_s)


def retry_after_s(history: History, now: float, cfg: WatchdogConfig) -> float | None:
    """Seconds until the budget allows one more restart; None when it allows one now."""
    recent = restarts_in_window(history, now, cfg.window_s)
    if len(recent) < cfg.max_restarts:
        return None
    # the oldest restart that must leave the window for the count to drop below the budget
    blocking = sorted(recent)[len(recent) - cfg.max_restarts]
    return max(0.0, blocking + cfg.window_s - now)


def watchdog_status(c: Container, h: History, now: float,
                    cfg: WatchdogConfig) -> dict[str, Any]:
    """The ``watchdog`` field of a container row: opt-out, protection, budget and breaker."""
    wait = retry_after_s(h, now, cfg)
    return {
        "enabled": not (c.opted_out or c.name in cfg.protected),
        "opted_out": c.opted_out, "protected": c.name in cfg.protected,
        "restarts_in_window": len(restarts_in_window(h, now, cfg.window_s)),
        "max_restarts": cfg.max_restarts, "window_s": cfg.window_s,
        "gave_up": h.gave_up_at is not None, "gave_up_at": rfc3339(h.gave_up_at),
        "retry_after_s": None if wait is None else round(wait, 3),
    }


def decide(snapshot: Snapshot, history: Mapping[str, History], now: float,
           cfg: WatchdogConfig) -> list[Action]:
    """The actions for ``snapshot`` (containers by name), ``now`` in Unix seconds.

    ``history`` maps container **id** to :class:`History` (missing = clean).
    Returns at most one action per container; see the module docstring.
    """
    actions = []
    for c in sorted(snapshot.containers, key=lambda c: (c.name, c.id)):
        action = decide_one(c, history.get(c.id, History()), now, cfg,
                            hold_active=snapshot.hold_active,
                            being_stopped=c.id in snapshot.being_stopped,
                            restarting=c.id in snapshot.restarting)
        if action is not None:
            actions.append(action)
    return actions


def skipped_by_list(c: Container, cfg: WatchdogConfig) -> bool:
    """True when rule 2 or 3 skips ``c`` (opted out, protected) whatever an inspect adds:
    both read only the name and labels, which a list entry has.  Its breaker's Resume
    needs the inspect (health, StartedAt, RestartCount): a tripped one is inspected."""
    return c.opted_out or c.name in cfg.protected


def decide_one(c: Container, h: History, now: float, cfg: WatchdogConfig, *,
               hold_active: bool, being_stopped: bool = False,
               restarting: bool = False) -> Action | None:
    """The action for one container (None: nothing to do or say)."""
    if h.gave_up_at is not None and (why := resume_reason(c, h)) is not None:
        return Resume(c.name, c.id, why)
    if c.state != "running" or c.health != "unhealthy":
        return None
    if restarting:
        return Skip(c.name, c.id, "restart in progress")
    if being_stopped:
        return Skip(c.name, c.id, "being stopped (docker stop or compose down in progress): "
                    "not restarted")
    skip = _eligibility(c, h, now, cfg) or _timing(c, h, now, hold_active=hold_active)
    if skip is not None:
        return skip
    if retry_after_s(h, now, cfg) is not None:
        return GiveUp(c.name, c.id, len(restarts_in_window(h, now, cfg.window_s)),
                      cfg.window_s, c.restart_count)
    return Restart(c.name, c.id, c.failing_streak, c.stop_timeout_s,
                   f"unhealthy, FailingStreak {c.failing_streak}")


def resume_reason(c: Container, h: History) -> str | None:
    """Why a tripped breaker resets now, or None (see the module docstring)."""
    if c.health == "healthy":
        return "healthy again"
    started_later = (c.started_at is not None and h.gave_up_at is not None
                     and c.started_at > h.gave_up_at)
    if started_later and c.restart_count == h.gave_up_restart_count:
        return "restarted by an operator"
    return None


def _eligibility(c: Container, h: History, now: float, cfg: WatchdogConfig) -> Skip | None:
    hc = c.healthcheck or Healthcheck()
    if c.opted_out:
        return Skip(c.name, c.id, "opted out (label vm-agent.watchdog=off)")
    if c.name in cfg.protected:
        return Skip(c.name, c.id, "protected (watchdog.protected)")
    need = cfg.failures_before_restart
    if c.failing_streak < need:
        return Skip(c.name, c.id, f"FailingStreak {c.failing_streak} < {need}",
                    recheck_after_s=_checks_away(c, hc, need - c.failing_streak, now))
    newest = c.health_log[-need:]
    if not newest or any(r.exit_code == 0 for r in newest):
        return Skip(c.name, c.id, f"health log disagrees: newest {len(newest)} checks "
                    f"are not all failures", recheck_after_s=hc.interval_s)
    if h.gave_up_at is not None:
        return Skip(c.name, c.id, "gave up (restart loop): waiting until it is healthy "
                    "again or an operator restarts it")
    return None


def _checks_away(c: Container, hc: Healthcheck, checks: int, now: float) -> float:
    """Seconds until ``checks`` more results are in: Docker runs the next probe one interval
    after the previous one ended (``daemon/health.go``), so from the newest End when known."""
    newest_end = c.health_log[-1].end if c.health_log else None
    base = now if newest_end is None else min(newest_end, now)
    return max(0.0, base + checks * hc.interval_s - now)


def _timing(c: Container, h: History, now: float, *, hold_active: bool) -> Skip | None:
    grace = (c.healthcheck or Healthcheck()).grace_s
    # a start or restart dated more than a grace period after now was stamped before the
    # clock stepped back: ignored, or a step back of a day would stop the watchdog a day
    since = max(t for t in (h.last_restart_at, c.started_at, float("-inf"))
                if t is not None and t <= now + grace)
    left = since + grace - now
    if left > 0:
        return Skip(c.name, c.id, f"in grace period: {left:.1f} s left of {grace:g} s",
                    recheck_after_s=left)
    if hold_active:
        return Skip(c.name, c.id, "hold active")
    return None
