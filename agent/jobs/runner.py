"""The fail-safe job runner (DESIGN.md principle 6): systemd decides when, this decides how.

:meth:`JobRunner.run` takes the job's single-flight lock
(:mod:`agent.jobs.lock`), refuses a destructive real run while a maintenance
hold is active, inserts the run record as ``running`` *before* any work,
measures disk usage, runs ``plan()`` and then every step (a failing or
raising step never stops the others), appends each step to the record as it
finishes, and finishes the record.  It catches everything: a bug, a hung
step (``jobs.step_timeout_s``) or a cancellation ends as a finished record
and a released lock, never as half a record or a stale lock.  A process that
dies by SIGKILL leaves a ``running`` record; :meth:`JobRunner.recover_stale`
marks it ``failed``/``interrupted`` at the next start unless its lock is
still held by a live process.

Refused runs leave a record too (status ``skipped`` with the reason): 409
Conflict (``details.running_run_id``) and 423 Locked (``details.hold``).
A ``failed`` run raises an alert event of kind ``job.failed``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from agent.audit import PRIORITY_INFO, PRIORITY_WARNING, Auditor
from agent.config import Config
from agent.errors import BadRequest, Conflict, Internal, Locked, NotFound
from agent.hold import HoldStore
from agent.host.disk import DiskReader
from agent.host.model import DiskSample
from agent.jobs.base import (
    Job,
    JobContext,
    NothingToDo,
    Step,
    StepResult,
    StepTimer,
    Trigger,
    execute_step,
    run_status,
)
from agent.jobs.lock import JobLock
from agent.jobs.records import RunRecords
from agent.jobs.runbook import INTERRUPTED, RunBook
from agent.notify.events import AlertLog

log = logging.getLogger("vm-agent")



class JobRunner:
    """Runs the jobs of ``jobs`` (the catalog) and keeps their records in ``records``."""

    def __init__(self, *, jobs: Mapping[str, Job], records: RunRecords, config: Config,
                 auditor: Auditor, hold: HoldStore, alerts: AlertLog | None = None,
                 services: Any = None) -> None:
        self.jobs = jobs
        self.records = records
        self.config = config
        self.auditor = auditor
        self.hold = hold
        self.alerts = alerts
        self.services = services
        self._disk_reader = DiskReader(config.jobs.disk_timeout_s)
        self.book = RunBook(records, config, alerts)
        self._tasks: set[asyncio.Task[None]] = set()

    def job(self, name: str) -> Job:
        """The registered job ``name``; NotFound (404) otherwise."""
        job = self.jobs.get(name)
        if job is None:
            known = ", ".join(self.jobs) or "none"
            raise NotFound(f"no job {name!r}; known jobs: {known}", {"job": name})
        return job

    async def run(self, job_name: str, *, mode: str | None = None, dry_run: bool = False,
                  trigger: Trigger = "api", peer: str | None = None,
                  wait: bool = True) -> dict[str, Any]:
        """Run a job; returns its finished record, or ``{id, status: "running", job}`` when not
        ``wait`` (the run goes on in a background task).

        Raises NotFound (unknown job), BadRequest(field ``mode``), Conflict (409, one is
        running: ``details.running_run_id``), Locked (423, hold active for a destructive
        real run).  Refusals are recorded as ``skipped`` runs (``details.run_id``).
        """
        job = self.job(job_name)
        ctx = self._context(job, _mode(job, mode), dry_run=dry_run)
        lock = JobLock(self.config.run_dir, job.name)
        run_id = await self._open(ctx, lock, job=job, trigger=trigger, peer=peer)
        task = asyncio.create_task(self._work(job, replace(ctx, run_id=run_id), lock))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not wait:
            return {"id": run_id, "status": "running", "job": job.name}
        await asyncio.shield(task)
        return await self.record(run_id)

    async def record(self, run_id: int) -> dict[str, Any]:
        """One run record (PROTOCOL.md "Run record"); NotFound (404) otherwise."""
        found = await asyncio.to_thread(self.records.get, run_id)
        if found is None:
            raise NotFound(f"no run {run_id}", {"run_id": run_id})
        return found

    def _context(self, job: Job, mode: str, *, dry_run: bool) -> JobContext:
        return JobContext(run_id=0, job=job.name, mode=mode, dry_run=dry_run,
                          config=self.config, services=self.services, auditor=self.auditor,
                          hold=self.hold, mounts=tuple(self.config.sampling.disks),
                          measure=self._measure)

    async def _measure(self, mounts: tuple[str, ...] | Any) -> tuple[DiskSample, ...]:
        samples, _unsampled = await self._disk_reader.read(mounts)
        return samples

    async def _open(self, ctx: JobContext, lock: JobLock, *, job: Job, trigger: Trigger,
                    peer: str | None) -> int:
        """Take the lock and insert the ``running`` record (or record the refusal and raise)."""
        base = {"job": ctx.job, "mode": ctx.mode, "dry_run": ctx.dry_run, "trigger": trigger,
                "peer": peer, "pid": os.getpid()}
        if not await self._acquire(base, lock):
            running_id = await asyncio.to_thread(self.book.running_id, lock)
            reason = f"already running (run {running_id})"
            skipped = await self._refused(base, reason)
            raise Conflict(f"job {ctx.job} is already running (run {running_id})",
                           {"running_run_id": running_id, "run_id": skipped})
        try:
            return await self._start(base, ctx, lock, destructive=job.destructive)
        except sqlite3.Error as exc:  # store locked past its busy timeout, full, corrupt
            lock.release()
            raise Internal(f"job {ctx.job} not started: its run record could not be written "
                           f"({type(exc).__name__}: {exc})") from exc
        except BaseException:
            lock.release()
            raise

    async def _acquire(self, base: dict[str, Any], lock: JobLock) -> bool:
        """``lock.acquire()``; a lock path that cannot be opened is a ``failed`` record, an
        alert (real runs) and Internal (500) naming the path (``details.run_id``)."""
        try:
            return await asyncio.to_thread(lock.acquire)
        except OSError as exc:
            reason = f"cannot take the job lock {lock.path}: {exc}"
            run_id = await self._refused(base, reason, status="failed")
            if not base["dry_run"]:
                self.book.alert(base["job"], run_id, reason)
            raise Internal(f"job {base['job']}: {reason}", {"run_id": run_id}) from exc

    async def _start(self, base: dict[str, Any], ctx: JobContext, lock: JobLock, *,
                     destructive: bool) -> int:
        if destructive and not ctx.dry_run:
            hold = self.hold.get()
            if hold.active:
                skipped = await self._refused(base, f"hold active: {hold.reason}")
                raise Locked(f"maintenance hold active ({hold.reason}); job {ctx.job} refused "
                             "(a dry-run is allowed)", {"hold": hold.to_wire(), "run_id": skipped})
        run_id = await asyncio.to_thread(self.book.begin, base, lock)
        self.auditor.action("job.start", message=f"job {ctx.job} ({ctx.mode}) started, run "
                            f"{run_id}", run_id=run_id, **_plain(base))
        return run_id

    async def _refused(self, base: dict[str, Any], reason: str, *,
                       status: str = "skipped") -> int:
        run_id = await asyncio.to_thread(self.book.refuse_record, base, reason, status)
        self.auditor.action("job.refused", message=f"job {base['job']} refused: {reason}",
                            priority=PRIORITY_WARNING, run_id=run_id, reason=reason,
                            **_plain(base))
        return run_id

    async def _work(self, job: Job, ctx: JobContext, lock: JobLock) -> None:
        """The run itself; always finishes the record and releases the lock."""
        status: str = "failed"
        reason: str | None = INTERRUPTED
        pruned = False
        results: list[StepResult] = []
        try:
            status, reason = await self._steps(job, ctx, results)
            after = await self._disks(ctx)
            await asyncio.to_thread(self.book.close, ctx, status, reason, after, results)
            pruned = True
        except asyncio.CancelledError:
            self.book.finish_quietly(ctx.run_id, INTERRUPTED, results)
            raise
        except Exception as exc:  # a runner bug must still close the record
            log.exception("job %s run %d: runner error", ctx.job, ctx.run_id)
            status, reason = "failed", f"runner error: {type(exc).__name__}: {exc}"
            self.book.finish_quietly(ctx.run_id, reason, results)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: the process is exiting
            reason = f"{INTERRUPTED}: {type(exc).__name__}"
            self.book.finish_quietly(ctx.run_id, reason, results)
            raise
        finally:
            lock.release()
            if not pruned:
                self.book.prune(ctx.job)
            self._after(ctx, status, reason)

    async def _steps(self, job: Job, ctx: JobContext,
                     results: list[StepResult]) -> tuple[str, str | None]:
        """Plan, then run every step, appending each result to ``results``."""
        before = await self._disks(ctx)
        await self._write(ctx, "disk usage before", self.records.set_disk_before, before)
        try:
            steps = await job.plan(ctx, ctx.mode)
        except Locked as exc:
            return "skipped", exc.message
        except NothingToDo as exc:  # ok (a timer's unit must not fail), with the reason
            return "ok", str(exc)
        except Exception as exc:
            log.exception("job %s run %d: plan failed", ctx.job, ctx.run_id)
            return "failed", f"plan failed: {type(exc).__name__}: {exc}"
        for seq, step in enumerate(steps):
            results.append(await self._step(job, ctx, step, seq))
        if results and all(r.status == "skipped" for r in results) and \
                (hold := self.hold.get()).active:  # set after the run started
            return "skipped", f"hold active: {hold.reason} (set during the run; every step " \
                "skipped)"
        status = run_status(results)
        failed = [r.name for r in results if r.status == "failed"]
        return status, (f"{len(failed)} of {len(results)} steps failed: {', '.join(failed)}"
                        if failed else None)

    async def _step(self, job: Job, ctx: JobContext, step: Step, seq: int) -> StepResult:
        with StepTimer() as timer:
            result = await execute_step(job, ctx, step, self.config.jobs.step_timeout_s)
        if not result.duration_s:
            result = replace(result, duration_s=timer.elapsed_s)
        await self._write(ctx, f"step {step.name}", self.records.add_step, result, seq)
        ctx.action("job.step", message=f"{ctx.job} step {step.name}: planned {step.detail!r}, "
                   f"{result.status}", step=step.name, status=result.status,
                   freed_bytes=result.freed_bytes, error=result.error or "")
        return result

    async def _write(self, ctx: JobContext, what: str, write: Any, *args: Any) -> None:
        """``write(ctx.run_id, *args)`` in a worker thread; a store that is locked or full
        is logged and the run goes on (the steps are written again when it finishes)."""
        try:
            await asyncio.to_thread(write, ctx.run_id, *args)
        except Exception as exc:
            log.warning("job %s run %d: %s not recorded yet: %s", ctx.job, ctx.run_id, what,
                        exc)

    async def _disks(self, ctx: JobContext) -> tuple[DiskSample, ...]:
        try:
            return await ctx.measure_disks()
        except Exception as exc:  # disk figures are informative; never fail a run on them
            log.warning("job %s: disk usage not measured: %s", ctx.job, exc)
            return ()

    def _after(self, ctx: JobContext, status: str, reason: str | None) -> None:
        ctx.action("job.finish", message=f"job {ctx.job} run {ctx.run_id} {status}"
                   + (f": {reason}" if reason else ""), status=status, reason=reason or "",
                   priority=PRIORITY_INFO if status == "ok" else PRIORITY_WARNING)
        if status == "failed" and not ctx.dry_run:  # a dry-run only reports
            self.book.alert(ctx.job, ctx.run_id, reason)

    async def recover_stale(self) -> list[int]:
        """At start-up: mark every interrupted run failed/interrupted; returns their ids."""
        recovered = await asyncio.to_thread(self.book.mark_stale)
        if recovered:
            log.warning("marked interrupted runs as failed: %s", recovered)
        return recovered

    async def close(self, *, grace_s: float | None = None) -> None:
        """On shutdown: give running jobs ``grace_s`` seconds (default
        ``jobs.shutdown_grace_s``), then cancel them (their records end failed/interrupted)."""
        tasks = set(self._tasks)
        if not tasks:
            return
        grace = self.config.jobs.shutdown_grace_s if grace_s is None else grace_s
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _mode(job: Job, mode: str | None) -> str:
    chosen = job.default_mode if mode is None else mode
    if chosen not in job.modes:
        raise BadRequest("mode", f"job {job.name} has no mode {chosen!r}; modes: "
                         f"{', '.join(job.modes)}", allowed=list(job.modes))
    return chosen


def _plain(base: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (int(v) if isinstance(v, bool) else v) for k, v in base.items()}
