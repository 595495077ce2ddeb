"""``digest``: one weekly message about the past 7 days, never sent twice for the same ISO week.

One step, ``send``: gather the figures (:mod:`agent.jobs.digest_data`:
host averages from Prometheus when ``prometheus.url`` is set, else from the
agent's hourly samples; cleanups, backup-repair failures and watchdog
restarts from the store), build the text (:func:`digest_text`) and queue it
in the outbox (kind ``digest``) with ``dedupe_key`` ``digest:<ISO year>-W<week>``
of the week the window reports on: the ISO week (UTC) of the window's middle,
``end - 3.5 days`` (:func:`report_week`), so the Monday 08:00 run reports and
dedupes as the previous week.  A second digest for the same week (e.g. a
manual Sunday run, then the Monday timer) queues nothing and the step is
``skipped`` with "already sent".  A figure with no data is said
("no data: ..."), never shown as zero.  A dry-run builds the text and queues
nothing.  Not destructive.

The top action (:func:`top_action`) is the first rule that applies, in this
order (figures with no data never match):

1. a backup-repair run failed (backups are the only thing that cannot be redone later);
2. a disk peaked above ``thresholds.disk_used_percent.crit``;
3. average MemAvailable below ``memory_available_bytes.warn`` or peak swap above
   ``swap_used_bytes.crit``;
4. the watchdog restarted a container (the one restarted most);
5. average steal above ``steal_percent.warn``;
6. a disk peaked above ``disk_used_percent.warn``;
7. peak swap above ``swap_used_bytes.warn``;
8. the source had no host figures at all (the agent or Prometheus was not sampling);
9. otherwise: nothing needs doing.

Units in the text: MB/GB = 10^6/10^9 bytes, percent 0-100, times UTC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.config import Config, ThresholdsConfig
from agent.jobs.base import JobContext, Step, StepResult
from agent.jobs.digest_data import HostFigures, StoreFigures, host_figures, store_figures
from agent.jobs.healthcheck import pct, size
from agent.notify.outbox import Outbox
from agent.schedule import next_run_text

KIND = "digest"
DAYS = 7
NO_UNHEALTHY = "no data: the agent has no Docker samples for that week"
NO_DOCKER_WATCH = "no data: Docker was never reachable that week, the watchdog did not run"


@dataclass(frozen=True)
class Digest:
    """Everything one digest says; ``start``/``end`` Unix seconds, ``week`` ``2026-W48``."""

    week: str
    start: float
    end: float
    host: HostFigures
    store: StoreFigures
    next_full_cleanup: str  # RFC 3339 UTC or "never"


def iso_week(at: float) -> str:
    """``2026-W48``: the ISO 8601 year and week of ``at`` (Unix seconds, UTC)."""
    year, week, _ = datetime.fromtimestamp(at, UTC).isocalendar()
    return f"{year}-W{week:02d}"


def report_week(end: float) -> str:
    """The ISO week a digest ending at ``end`` (Unix seconds) reports on: the week of the
    window's middle, ``end - DAYS/2 days`` (the week the window mostly covers)."""
    return iso_week(end - DAYS * 86400 / 2)


def dedupe_key(end: float) -> str:
    """The outbox key that makes the digest once per reported week: ``digest:2026-W48``
    (:func:`report_week` of the window's ``end``)."""
    return f"digest:{report_week(end)}"


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


def _or(value: float | None, fmt: Any, missing: str) -> str:
    return missing if value is None else str(fmt(value))


def host_lines(h: HostFigures) -> list[str]:
    """The host lines: steal, free RAM, swap, disk, unhealthy (``no data`` when missing)."""
    disk = ", ".join(f"{m} {pct(p)}" for m, p in h.disk_peak_percent.items())
    return [
        f"- CPU steal: {_or(h.steal_avg_percent, lambda v: pct(v) + ' average', h.missing)}",
        f"- Free RAM (MemAvailable): "
        f"{_or(h.mem_avail_avg_bytes, lambda v: size(v) + ' average', h.missing)}",
        f"- Peak swap used: {_or(h.swap_peak_bytes, size, h.missing)}",
        f"- Disk use (peak): {disk or h.missing}",
        f"- Unhealthy containers: "
        f"{_or(h.unhealthy_max, lambda v: f'at most {v} at once', NO_UNHEALTHY)}",
    ]


def _docker_watched(s: StoreFigures) -> bool:
    """Evidence that Docker was watched in the window: an hour with a Docker sample
    (``unhealthy_max`` not NULL) or a watchdog restart."""
    return s.host.unhealthy_max is not None or bool(s.restarts)


def store_lines(s: StoreFigures) -> list[str]:
    """Cleanups (freed, by mode), watchdog restarts, backup-repair failures."""
    runs = sum(s.cleanups.values())
    modes = ", ".join(f"{m} {n}" for m, n in s.cleanups.items())
    restarts = _or(sum(s.restarts.values()) if _docker_watched(s) else None, str,
                   NO_DOCKER_WATCH)
    who = ", ".join(f"{c} {n}" for c, n in s.restarts.items())
    return [
        f"- Cleanup freed: {size(s.cleanup_freed_bytes)} in {runs} run(s)"
        + (f" ({modes})" if modes else " (no cleanup ran)"),
        f"- Watchdog restarts: {restarts}" + (f" ({who})" if who else ""),
        f"- Backup-repair failures: {s.backup_failures} of {s.backup_runs} run(s)",
    ]


def digest_text(d: Digest, t: ThresholdsConfig) -> str:
    """The whole message (plain text)."""
    lines = [f"vm-agent weekly digest {d.week} ({_day(d.start)} to {_day(d.end)} UTC)",
             f"Host figures from {d.host.source}."]
    if d.host.note:
        lines.append(d.host.note)
    lines += host_lines(d.host) + store_lines(d.store)
    lines += [f"- Next full cleanup (monthly): {d.next_full_cleanup}",
              f"Top action: {top_action(d, t)}"]
    return "\n".join(lines)


def _over(value: float | None, limit: float | None, *, below: bool = False) -> bool:
    if value is None or limit is None:
        return False
    return value < limit if below else value > limit


def _disk_over(h: HostFigures, limit: float | None) -> str | None:
    over = [m for m, p in h.disk_peak_percent.items() if _over(p, limit)]
    return max(over, key=h.disk_peak_percent.__getitem__) if over else None


def top_action(d: Digest, t: ThresholdsConfig) -> str:
    """The first rule of the module docstring's list that applies."""
    h, s = d.host, d.store
    crit_disk, warn_disk = (_disk_over(h, t.disk_used_percent.crit),
                            _disk_over(h, t.disk_used_percent.warn))
    if s.backup_failures:
        return (f"fix the git backup: {s.backup_failures} backup-repair run(s) failed "
                "(see `vm-agentctl runs backup-repair`).")
    if crit_disk:
        return (f"free disk on {crit_disk} (peak {pct(h.disk_peak_percent[crit_disk])}): run "
                "`vm-agentctl run cleanup --mode monthly --dry-run`, then for real.")
    if _over(h.mem_avail_avg_bytes, t.memory_available_bytes.warn, below=True) \
            or _over(h.swap_peak_bytes, t.swap_used_bytes.crit):
        return ("memory is short: limit or restart the largest containers (`docker stats "
                "--no-stream`) or add RAM.")
    if s.restarts:
        name, n = next(iter(s.restarts.items()))
        return (f"look into {name}: the watchdog restarted it {n} time(s); a restart hides "
                f"the cause (`docker logs --tail 200 {name}`).")
    if _over(h.steal_avg_percent, t.steal_percent.warn):
        return ("CPU steal is high: ask the provider to migrate the VM or move to dedicated "
                "vCPUs.")
    if warn_disk:
        return (f"disk {warn_disk} peaked at {pct(h.disk_peak_percent[warn_disk])}: check "
                "what grows (`du -xh -d1 " + warn_disk + " | sort -h`).")
    if _over(h.swap_peak_bytes, t.swap_used_bytes.warn):
        return "swap was used: find the container that grew (`docker stats --no-stream`)."
    if h.steal_avg_percent is None and h.mem_avail_avg_bytes is None:
        return f"get host figures back: {h.source} had none for the week ({h.missing})."
    return "nothing needs doing this week."


async def build_digest(store: Any, config: Config, *, end: float) -> Digest:
    """Gather the figures of the ``DAYS`` days before ``end`` (Unix seconds)."""
    start = end - DAYS * 86400
    local = await asyncio.to_thread(store_figures, store, start, end)
    host = await host_figures(config.prometheus, tuple(config.sampling.disks), local.host,
                              days=DAYS, end=end)
    sched = config.jobs.schedule
    nxt = next_run_text(sched.cleanup_monthly, sched.timezone, datetime.fromtimestamp(end, UTC))
    return Digest(report_week(end), start, end, host, local, nxt)


class DigestJob:
    """See the module docstring; ``clock`` gives the run time (Unix seconds; tests set it)."""

    name = "digest"
    modes = ("default",)
    default_mode = "default"
    destructive = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    async def plan(self, ctx: JobContext, mode: str) -> list[Step]:
        """A single ``send`` step."""
        return [Step("send", "digest", f"the weekly digest of the past {DAYS} days, once per "
                     "ISO week")]

    async def execute(self, ctx: JobContext, step: Step, *, dry_run: bool) -> StepResult:
        """Build and queue the digest; ``skipped`` when this ISO week's was already queued."""
        store = getattr(ctx.services, "store", None)
        if store is None:
            return StepResult(step.name, "failed", error="no state store")
        now = self.clock()
        digest = await build_digest(store, ctx.config, end=now)
        text = digest_text(digest, ctx.config.thresholds)
        if dry_run:
            return StepResult(step.name, "planned", detail=f"would send:\n{text}")
        msg_id = await asyncio.to_thread(Outbox(store).enqueue, text, kind=KIND,
                                         dedupe_key=dedupe_key(now))
        if msg_id is None:
            return StepResult(step.name, "skipped",
                              detail=f"already sent for {digest.week}; nothing queued")
        return StepResult(step.name, "ok", detail=f"message {msg_id} queued:\n{text}")
