"""Job schedules: 5-field cron expressions, their next runs as Linux cron fires them.

croniter does the field arithmetic; this module adds what Debian's cron
(Vixie cron 3.0 / cronie) does and croniter does not:

- **day fields** (``man 5 crontab``): when day-of-month and day-of-week are
  both restricted, a day matches if *either* does (OR).  Cron counts a field
  as unrestricted when it *starts* with ``*`` (so ``*/2`` is unrestricted
  too, and ``0 0 */2 * 1`` means odd days that are Mondays); croniter is
  told ``day_or`` accordingly.
- **DST** (``man 8 cron``, "Daylight Saving Time and other time changes"):
  expressions are wall-clock times in the configured zone.  A *fixed-time*
  job (neither minute nor hour starts with ``*``) runs once when the clock
  falls back (at the first of the two wall-clock times) and, when its time
  is skipped by a spring-forward, runs at the moment of the jump.
  A *wildcard* job follows the clock: it runs at each repeated wall-clock
  time and not at all for skipped ones.
- an expression that can never fire (``0 0 30 2 *``) has no next run:
  :func:`next_runs` returns ``[]`` and :func:`next_run_text` ``"never"``.

Times handed out are timezone-aware UTC datetimes (RFC 3339 ``...Z`` on the
wire).  Expressions and zones are validated at start-up through
:func:`parse_cron` / :func:`zone`, which raise
:class:`agent.errors.ConfigError` naming the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from agent.errors import ConfigError

#: croniter is started this long before ``after`` (local wall clock), so that
#: the second pass through a fall-back hour is not missed.
LOOKBACK = timedelta(hours=3)
FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
NEVER = "never"


@dataclass(frozen=True)
class CronSpec:
    """A validated 5-field expression; ``day_or`` and ``fixed_time`` as cron reads it."""

    expr: str
    day_or: bool
    fixed_time: bool


def parse_cron(expr: str, *, key: str = "schedule") -> CronSpec:
    """Validate a 5-field cron expression (``man 5 crontab``; names like ``mon`` allowed).

    Raises ConfigError(key, reason) for a wrong field count or a bad field.
    """
    fields = expr.split()
    if len(fields) != len(FIELD_NAMES):
        raise ConfigError(key, f"{expr!r} is not a 5-field cron expression "
                          f"({' '.join(FIELD_NAMES)}); got {len(fields)} fields")
    try:
        croniter(expr, datetime(2000, 1, 1))
    except CroniterBadDateError:
        pass  # valid fields that never match (``0 0 30 2 *``): reported as "never"
    except (CroniterError, ValueError, KeyError) as exc:
        raise ConfigError(key, f"{expr!r} is not a valid cron expression: {exc}") from None
    return CronSpec(" ".join(fields), day_or=not _starts_star(fields[2], fields[4]),
                    fixed_time=not _starts_star(fields[0], fields[1]))


def _starts_star(*fields: str) -> bool:
    return any(f.startswith("*") for f in fields)


def zone(name: str, *, key: str = "timezone") -> ZoneInfo:
    """The IANA zone ``name`` (``UTC``, ``Europe/Berlin``); ConfigError(key) if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(key, f"unknown time zone {name!r} (an IANA name such as UTC or "
                          f"Europe/Berlin): {exc}") from None


def next_runs(expr: str | CronSpec, tz: str | tzinfo, after: datetime, n: int) -> list[datetime]:
    """The next ``n`` times (aware UTC datetimes, ascending) strictly after ``after``.

    ``expr`` is read as wall-clock time in ``tz`` (a zone name or tzinfo),
    with cron's day-field and DST rules (module docstring).  ``after`` may be
    naive (taken as UTC).  Returns fewer than ``n`` only for an expression
    that stops firing, ``[]`` for one that never fires.  Raises ConfigError
    for a bad expression or zone.
    """
    spec = expr if isinstance(expr, CronSpec) else parse_cron(expr)
    zi = zone(tz) if isinstance(tz, str) else tz
    after_utc = (after if after.tzinfo else after.replace(tzinfo=UTC)).astimezone(UTC)
    found: set[datetime] = set()
    for naive in _wall_times(spec, after_utc.astimezone(zi).replace(tzinfo=None) - LOOKBACK):
        found.update(t for t in _instants(naive, zi, fixed=spec.fixed_time) if t > after_utc)
        if len(found) >= n and sorted(found)[n - 1] < _earliest(naive, zi):
            break
    return sorted(found)[:n]


def next_run_text(expr: str | CronSpec, tz: str | tzinfo, after: datetime) -> str:
    """The next run as RFC 3339 UTC (``2026-11-30T03:30:00Z``), or ``"never"``."""
    runs = next_runs(expr, tz, after, 1)
    return rfc3339(runs[0]) if runs else NEVER


def rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC 3339 UTC with seconds: ``2026-11-30T03:30:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wall_times(spec: CronSpec, start: datetime) -> Iterator[datetime]:
    """Naive wall-clock matches after ``start``; ends when croniter finds no more."""
    it = croniter(spec.expr, start, day_or=spec.day_or)
    while True:
        try:
            yield it.get_next(datetime)
        except CroniterBadDateError:
            return


def _instants(naive: datetime, zi: tzinfo, *, fixed: bool) -> list[datetime]:
    """The UTC instants at which cron fires for wall-clock time ``naive`` in ``zi``."""
    first, second = (naive.replace(tzinfo=zi, fold=f).astimezone(UTC) for f in (0, 1))
    if first == second:
        return [first]
    if _exists(naive, zi):  # repeated by a fall-back: fold 0 is the first pass
        return [first] if fixed else sorted((first, second))
    return [_transition(min(first, second), max(first, second), zi)] if fixed else []


def _exists(naive: datetime, zi: tzinfo) -> bool:
    as_utc = naive.replace(tzinfo=zi).astimezone(UTC)
    return as_utc.astimezone(zi).replace(tzinfo=None) == naive


def _earliest(naive: datetime, zi: tzinfo) -> datetime:
    return min(naive.replace(tzinfo=zi, fold=f).astimezone(UTC) for f in (0, 1))


def _transition(lo: datetime, hi: datetime, zi: tzinfo) -> datetime:
    """The first UTC second in ``(lo, hi]`` whose offset is ``hi``'s (the jump of a gap)."""
    target = hi.astimezone(zi).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(zi).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return hi


# --- the scheduled jobs ------------------------------------------------------

#: ``jobs.schedule`` key -> (job, mode or None). Order is display order.
SCHEDULED: tuple[tuple[str, str, str | None], ...] = (
    ("cleanup_standard", "cleanup", "standard"),
    ("cleanup_weekly", "cleanup", "weekly"),
    ("cleanup_monthly", "cleanup", "monthly"),
    ("watchdog", "watchdog", None),
    ("backup_repair", "backup-repair", None),
    ("healthcheck", "healthcheck", None),
    ("digest", "digest", None),
)


def timer_unit(job: str, mode: str | None) -> str:
    """The shipped timer of a job/mode: ``vm-agent-cleanup-weekly.timer``,
    ``vm-agent-digest.timer``."""
    return f"vm-agent-{job}-{mode}.timer" if mode else f"vm-agent-{job}.timer"


@dataclass(frozen=True)
class JobSchedule:
    """One scheduled job/mode as ``GET /v1/jobs`` shows it."""

    key: str
    job: str
    mode: str | None
    schedule: str
    timezone: str
    timer: str
    next_run: str  # RFC 3339 UTC, or "never"

    def to_wire(self) -> dict[str, Any]:
        return {"job": self.job, "mode": self.mode, "schedule": self.schedule,
                "timezone": self.timezone, "timer": self.timer, "next_run": self.next_run,
                "config_key": f"jobs.schedule.{self.key}"}


def job_schedules(schedule: Any, now: datetime, job: str | None = None) -> list[JobSchedule]:
    """Every scheduled job/mode (or those of ``job``) with its next run after ``now``.

    ``schedule`` is the ``jobs.schedule`` config section (an object with one
    attribute per key of :data:`SCHEDULED` plus ``timezone``).
    """
    tz = zone(schedule.timezone)
    return [JobSchedule(key, name, mode, getattr(schedule, key), schedule.timezone,
                        timer_unit(name, mode), next_run_text(getattr(schedule, key), tz, now))
            for key, name, mode in SCHEDULED if job in (None, name)]


def validate_schedule(schedule: Any) -> None:
    """Raise ConfigError (key relative to ``jobs.schedule``) for a bad expression or zone."""
    zone(schedule.timezone, key="timezone")
    for key, _job, _mode in SCHEDULED:
        parse_cron(getattr(schedule, key), key=key)
