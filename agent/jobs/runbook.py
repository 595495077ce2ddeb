"""A job's run records and alerts in the state store, for :mod:`agent.jobs.runner`.

Every method blocks (SQLite, file locks): the runner calls them in worker
threads, one hop per phase of a run (open, refuse, close).  Failures to
prune or to raise an alert are logged, never raised: they must not cost a
run its record.
"""

from __future__ import annotations

import logging
from typing import Any

from agent.config import Config
from agent.host.model import DiskSample
from agent.jobs.base import JobContext, StepResult
from agent.jobs.lock import JobLock
from agent.jobs.records import RunRecords
from agent.notify.events import AlertEvent, AlertLog

log = logging.getLogger("vm-agent")

INTERRUPTED = "interrupted"
#: How long a refused requester waits for the lock's new holder to name its run, seconds.
OWNER_WAIT_S = 1.0


class RunBook:
    """The run records of ``records`` and ``job.failed`` alerts in ``alerts`` (optional)."""

    def __init__(self, records: RunRecords, config: Config, alerts: AlertLog | None) -> None:
        self.records = records
        self.config = config
        self.alerts = alerts

    def begin(self, base: dict[str, Any], lock: JobLock) -> int:
        """In one worker-thread hop: mark the job's stale runs, insert the ``running`` record,
        name it in the held ``lock``; its run id."""
        self.mark_stale(base["job"], held=lock)
        run_id = self.records.start(**base)
        lock.set_owner(run_id)
        return run_id

    def refuse_record(self, base: dict[str, Any], reason: str, status: str) -> int:
        """Insert a finished (``skipped``) record and prune the job's old ones (one hop)."""
        run_id = self.records.start(**base, status=status, reason=reason)
        self.prune(base["job"])
        return run_id

    def running_id(self, lock: JobLock) -> int | None:
        """The run holding ``lock`` (blocking: waits up to OWNER_WAIT_S for a holder that
        has just taken it to name its run), else the job's newest ``running`` record."""
        owner = lock.wait_owner(OWNER_WAIT_S)
        if owner and isinstance(owner.get("run_id"), int):
            return int(owner["run_id"])
        rows = self.records.running(lock.path.stem)
        return int(rows[-1]["id"]) if rows else None

    def close(self, ctx: JobContext, status: str, reason: str | None,
              after: tuple[DiskSample, ...], results: list[StepResult]) -> None:
        """Finish the record (with any step not yet written) and prune the job's old ones,
        in one worker-thread hop (SQLite writes are off the event loop).  Raises what
        ``finish`` raises."""
        self.records.finish(ctx.run_id, status=status, reason=reason, disk_after=after,
                            steps=results)
        self.prune(ctx.job)

    def finish_quietly(self, run_id: int, reason: str,
                       results: list[StepResult] | None = None) -> None:
        """Finish the record ``failed`` with ``reason`` (a cancelled or broken run); a store
        that refuses is logged."""
        try:
            self.records.finish(run_id, status="failed", reason=reason, disk_after=None,
                                steps=results or ())
        except Exception:
            log.exception("run %d: record could not be finished", run_id)

    def prune(self, job: str) -> None:
        """Drop ``job``'s records past ``jobs.keep_days`` / ``jobs.keep_runs`` (logged on
        failure)."""
        try:
            self.records.prune(job, keep_days=self.config.jobs.keep_days,
                               keep_runs=self.config.jobs.keep_runs)
        except Exception:
            log.exception("job %s: run records not pruned", job)

    def alert(self, job: str, run_id: int, reason: str | None) -> None:
        """Raise ``job.failed`` (WARN) for run ``run_id`` (logged on failure)."""
        if self.alerts is None:
            return
        try:
            self.alerts.emit(AlertEvent("job.failed", job, "WARN",
                                        f"job {job} run {run_id} failed: {reason}"))
        except Exception:
            log.exception("job %s: alert not recorded", job)

    def mark_stale(self, job: str | None = None, *, held: JobLock | None = None) -> list[int]:
        """Mark ``running`` records whose run is gone failed/interrupted (records.py
        ``mark_stale``), one ``job.failed`` alert each; returns their ids."""
        stale = self.records.mark_stale(self.config.run_dir, job, held=held,
                                        reason=INTERRUPTED)
        for run_id, name in stale:
            self.alert(name, run_id, INTERRUPTED)
        return [run_id for run_id, _ in stale]
