"""``watchdog``: one container-watchdog pass as a recorded job (``vm-agentctl run watchdog``).

The pass itself is :func:`agent.containers.watchdog_run.watchdog_pass` on the
daemon's watchdog service (``services.watchdog.deps``): observe unhealthy
containers, decide, restart per policy, record, audit, alert.  The job only
wraps it in a run record.  It is not marked ``destructive``: the pass reads
the maintenance hold itself and, while a hold is active, decides to skip
every restart (each skip audited) instead of being refused with 423, so the
timer-driven pass keeps observing during a hold.

One step, ``pass``: ``ok`` (or ``planned`` in a dry-run, which decides and
restarts nothing), ``failed`` when any restart failed or Docker could not be
listed.  It frees no disk space (``freed_bytes`` 0).
"""

from __future__ import annotations

from typing import Any

from agent.containers.watchdog_run import WatchdogReport, watchdog_pass
from agent.jobs.base import JobContext, Step, StepResult


class WatchdogJob:
    """See the module docstring."""

    name = "watchdog"
    modes = ("standard",)
    default_mode = "standard"
    destructive = False

    async def plan(self, ctx: JobContext, mode: str) -> list[Step]:
        """A single ``pass`` step (the pass observes and decides when it runs)."""
        return [Step("pass", "watchdog_pass", "restart unhealthy containers per the "
                     "watchdog policy (hold, budget, protected names)")]

    async def execute(self, ctx: JobContext, step: Step, *, dry_run: bool) -> StepResult:
        """Run one pass; raises UpstreamUnavailable when Docker cannot be listed."""
        service: Any = getattr(ctx.services, "watchdog", None)
        if service is None:
            return StepResult(step.name, "failed", error="the watchdog service is not running")
        report = await watchdog_pass(service.deps, dry_run=dry_run)
        return _result(step.name, report)


def _result(name: str, report: WatchdogReport) -> StepResult:
    acted = [f"{a.kind} {a.container}" for a in report.actions]
    detail = (f"examined {report.examined}, hold {'active' if report.hold_active else 'off'}; "
              + (", ".join(acted) if acted else "nothing to do"))
    failed = [f"{r.container}: {r.error}" for r in report.results if r.result == "failed"]
    if report.dry_run:
        return StepResult(name, "planned", 0, round(report.took_s, 3), detail)
    if failed:
        return StepResult(name, "failed", 0, round(report.took_s, 3), detail,
                          "restart failed: " + "; ".join(failed))
    return StepResult(name, "ok", 0, round(report.took_s, 3), detail)
