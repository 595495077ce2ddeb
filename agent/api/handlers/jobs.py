"""Handlers for the job runner: run a job, list jobs, list runs, one run record."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from agent.api.params import NoParams, param
from agent.api.registry import Call
from agent.config import Config
from agent.crontab import host_zone, legacy_crontab
from agent.errors import Internal
from agent.jobs.base import Trigger
from agent.jobs.runner import JobRunner
from agent.schedule import SCHEDULED, job_schedules

JOB_NAME = r"[a-z][a-z0-9-]{0,62}"
MODE_NAME = r"[a-z][a-z0-9_-]{0,62}"


def _runner(call: Call[Any]) -> JobRunner:
    runner: JobRunner | None = call.services.jobs
    if runner is None:
        raise Internal("the job runner is not configured")
    return runner


@dataclass(frozen=True)
class RunParams:
    job: str = param(pattern=JOB_NAME)
    mode: str | None = param(None, pattern=MODE_NAME)
    dry_run: bool = param(False)
    wait: bool = param(True)
    trigger: str = param("api", choices=("api", "cli", "timer"))


async def run(call: Call[RunParams]) -> dict[str, Any]:
    """Run a job: the finished run record, or ``{id, status: "running"}`` with ``wait: false``.

    ``mode`` defaults to the job's default mode; 404 unknown job, 400 unknown mode,
    409 one is running (``details.running_run_id``), 423 hold active (destructive, not dry-run).
    """
    p = call.params
    return await _runner(call).run(p.job, mode=p.mode, dry_run=p.dry_run,
                                   trigger=cast(Trigger, p.trigger),
                                   peer=call.peer.describe(), wait=p.wait)


async def jobs(call: Call[NoParams]) -> dict[str, Any]:
    """``{jobs: [...], legacy_crontab: [...]}``.

    Per job: ``{name, available, modes, default_mode, destructive, schedule, timer,
    next_run, schedules, last_run}``.  ``schedule``/``timer``/``next_run`` are those of
    the job's soonest-firing schedule (cron expression in ``jobs.schedule.timezone``,
    shipped systemd timer, RFC 3339 UTC or ``"never"``); ``schedules`` lists every mode's
    (agent.schedule).  ``last_run`` is ``{id, mode, dry_run, status, reason, freed_bytes
    (bytes), started_at, finished_at}`` or null.  A scheduled job this agent does not
    implement yet is listed with ``available: false``.  ``legacy_crontab`` is the host
    crontab's ``# bytelyst-vm-maintenance`` block (agent.crontab), ``[]`` when absent.
    """
    runner = _runner(call)
    return await asyncio.to_thread(_jobs_view, runner, call.services.config,
                                   datetime.now(UTC))


def _jobs_view(runner: JobRunner, cfg: Config, now: datetime) -> dict[str, Any]:
    scheduled = [name for _key, name, _mode in SCHEDULED]
    names = list(dict.fromkeys([*runner.jobs, *scheduled]))
    rows = [_job_row(runner, cfg, name, now) for name in names]
    legacy = legacy_crontab(cfg.jobs.schedule.legacy_crontabs, tz=host_zone(), now=now)
    return {"jobs": rows, "legacy_crontab": [e.to_wire() for e in legacy]}


def _job_row(runner: JobRunner, cfg: Config, name: str, now: datetime) -> dict[str, Any]:
    job = runner.jobs.get(name)
    entries = job_schedules(cfg.jobs.schedule, now, name)
    soonest = min(entries, key=lambda e: e.next_run) if entries else None  # "never" sorts last
    return {"name": name, "available": job is not None,
            "modes": list(job.modes) if job else [],
            "default_mode": job.default_mode if job else None,
            "destructive": job.destructive if job else None,
            "schedule": soonest.schedule if soonest else None,
            "timer": soonest.timer if soonest else None,
            "next_run": soonest.next_run if soonest else None,
            "schedules": [e.to_wire() for e in entries],
            "last_run": _summary(runner.records.last(name))}


def _summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    keys = ("id", "mode", "dry_run", "status", "reason", "freed_bytes", "started_at",
            "finished_at")
    return {k: record[k] for k in keys}


@dataclass(frozen=True)
class RunsParams:
    job: str = param(pattern=JOB_NAME)
    limit: int = param(30, min=1, max=500)


async def runs(call: Call[RunsParams]) -> list[dict[str, Any]]:
    """The newest ``limit`` run records of one job (default 30, max 500), newest first."""
    runner = _runner(call)
    job = runner.job(call.params.job)  # 404 for an unknown job
    return await asyncio.to_thread(runner.records.recent, job.name, call.params.limit)


@dataclass(frozen=True)
class RunIdParams:
    id: int = param(min=1, max=2**62)


async def run_record(call: Call[RunIdParams]) -> dict[str, Any]:
    """One run record (PROTOCOL.md "Run record"); 404 when there is no such run."""
    return await _runner(call).record(call.params.id)
