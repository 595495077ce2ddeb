"""What a watchdog pass reports: :class:`ActionResult` per action, :class:`WatchdogReport`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from agent.containers.model import rfc3339
from agent.containers.watchdog import Action, Skip, action_wire


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
        return recheck_after_s(self.actions)

    def to_wire(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "started_at": rfc3339(self.started_at),
                "took_s": round(self.took_s, 3), "hold_active": self.hold_active,
                "examined": self.examined, "status": self.status,
                "actions": [action_wire(a) for a in self.actions],
                "results": [asdict(r) for r in self.results]}


def recheck_after_s(actions: Sequence[Action]) -> float | None:
    """The soonest time (seconds from the pass) one of ``actions``, a Skip, could turn
    into a restart; None when none could."""
    due = [a.recheck_after_s for a in actions
           if isinstance(a, Skip) and a.recheck_after_s is not None]
    return min(due) if due else None
