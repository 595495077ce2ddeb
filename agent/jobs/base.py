"""The job interface every maintenance job implements (DESIGN.md principle 5).

A job is a pure :meth:`Job.plan` that returns typed :class:`Step` objects
(no side effects: it may read Docker, files and sizes, never change them)
and an :meth:`Job.execute` that carries out one step and returns a
:class:`StepResult`.  The runner (:mod:`agent.jobs.runner`) does the rest:
single flight, the hold, the run record, disk before/after, alerts.

* Dry-run = ``plan()`` then ``execute(step, dry_run=True)`` for each step:
  the step reports, from real data, what it *would* free (status
  ``planned``) and changes nothing.
* A step that fails (returns ``failed`` or raises) never stops the others;
  the run is then ``partial`` (some steps failed) or ``failed`` (all did).
* Units: ``freed_bytes`` / ``estimated_bytes`` in bytes (the CLI shows
  MB = 10^6 bytes, as Docker prints sizes); ``duration_s`` in seconds.

A job class needs the attributes ``name`` (``[a-z][a-z0-9-]*``), ``modes``
(tuple of mode names), ``default_mode`` (one of ``modes``) and
``destructive`` (True when a real run deletes, restarts or resets anything;
such a run is refused with 423 while a maintenance hold is active, a dry-run
is not).  Register it in :mod:`agent.jobs.catalog`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol

from agent.audit import PRIORITY_INFO, Auditor
from agent.config import Config
from agent.errors import AgentError, Locked
from agent.hold import HoldStore
from agent.host.model import DiskSample

StepStatus = Literal["ok", "failed", "skipped", "planned"]
RunStatus = Literal["running", "ok", "partial", "failed", "skipped"]
Trigger = Literal["timer", "api", "cli"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
log = logging.getLogger("vm-agent")


@dataclass(frozen=True)
class Step:
    """One planned unit of work.

    ``name`` is unique within a plan (``docker_dangling_images``); ``kind``
    is what :meth:`Job.execute` dispatches on; ``detail`` one human line;
    ``estimated_bytes`` what the plan expects to free (bytes) or ``None``
    when unknown; ``args`` the step's typed inputs (read-only mapping).
    """

    name: str
    kind: str
    detail: str = ""
    estimated_bytes: int | None = None
    args: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False)


@dataclass(frozen=True)
class StepResult:
    """What one step did (or, in a dry-run, would do).

    ``status``: ``ok`` done, ``failed`` error (``error`` says why),
    ``skipped`` not applicable (e.g. tool missing; ``detail`` says why),
    ``planned`` dry-run.  ``freed_bytes`` bytes freed (would free, in a
    dry-run); ``duration_s`` seconds the step took.
    """

    name: str
    status: StepStatus
    freed_bytes: int = 0
    duration_s: float = 0.0
    detail: str = ""
    error: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """``{name, status, freed_bytes, duration_s, detail, error}`` (PROTOCOL.md)."""
        return asdict(self)

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> StepResult:
        """The inverse of :meth:`to_wire` (unknown keys ignored)."""
        return cls(name=str(raw["name"]), status=raw["status"],
                   freed_bytes=int(raw.get("freed_bytes") or 0),
                   duration_s=float(raw.get("duration_s") or 0.0),
                   detail=str(raw.get("detail") or ""), error=raw.get("error"))


DiskMeasure = Callable[[Sequence[str]], Awaitable[tuple[DiskSample, ...]]]


@dataclass(frozen=True)
class JobContext:
    """What a job gets for one run.

    ``services`` is the daemon's :class:`agent.api.services.Services` (typed
    ``Any`` so jobs and tests may pass any object with the attributes they
    use, e.g. ``services.docker``); ``config`` the whole Config;
    ``run_id`` the run record's id; ``mounts`` the mounts measured before and
    after.  ``measure`` reads disk usage (bytes) of the given mounts.
    """

    run_id: int
    job: str
    mode: str
    dry_run: bool
    config: Config
    services: Any
    auditor: Auditor
    hold: HoldStore
    mounts: tuple[str, ...]
    measure: DiskMeasure

    async def measure_disks(self) -> tuple[DiskSample, ...]:
        """Usage of the configured mounts now (bytes; unreadable mounts left out)."""
        return await self.measure(self.mounts)

    def check_hold(self, action: str) -> None:
        """Raise :class:`agent.errors.Locked` (423) if a maintenance hold is active."""
        self.hold.check(action)

    def action(self, event_name: str, message: str = "", *, priority: int = PRIORITY_INFO,
               **fields: Any) -> None:
        """Audit one job action (``VMAGENT_ACTION``) tagged with this run's id and job."""
        self.auditor.action(event_name, message=message, priority=priority, run_id=self.run_id,
                            job=self.job, mode=self.mode, dry_run=int(self.dry_run), **fields)


class Job(Protocol):
    """A maintenance job (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def modes(self) -> tuple[str, ...]: ...

    @property
    def default_mode(self) -> str: ...

    @property
    def destructive(self) -> bool: ...

    async def plan(self, ctx: JobContext, mode: str) -> list[Step]:
        """The steps of ``mode``, in order; no side effects."""
        ...

    async def execute(self, ctx: JobContext, step: Step, *, dry_run: bool) -> StepResult:
        """Carry out ``step`` (or, with ``dry_run``, report what it would do)."""
        ...


class NothingToDo(Exception):
    """Raised by a job's ``plan()`` when its configuration gives it nothing to do (e.g.
    no repos): the run is ``ok`` with no step and this message as its reason (a timer's
    unit does not fail every interval; the record says why nothing was done)."""


class StepTimer:
    """``with StepTimer() as t: ...; t.elapsed_s`` (monotonic seconds, rounded to ms)."""

    def __enter__(self) -> StepTimer:
        self._start = time.monotonic()
        self.elapsed_s = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed_s = round(time.monotonic() - self._start, 3)


def run_status(results: Sequence[StepResult]) -> RunStatus:
    """``failed`` if every step failed, ``partial`` if some did, else ``ok`` (also for none)."""
    failed = sum(r.status == "failed" for r in results)
    if failed == 0:
        return "ok"
    return "failed" if failed == len(results) else "partial"


async def execute_step(job: Job, ctx: JobContext, step: Step, timeout_s: float) -> StepResult:
    """``job.execute(step)`` that never raises an Exception: Locked (a hold set since the
    plan) is a ``skipped`` step, a step still running after ``timeout_s`` seconds or one that
    raises is ``failed`` with the error.  BaseException (cancellation, KeyboardInterrupt,
    SystemExit) propagates: the runner records the run as interrupted."""
    try:
        async with asyncio.timeout(timeout_s):
            return await job.execute(ctx, step, dry_run=ctx.dry_run)
    except Locked as exc:
        return StepResult(step.name, "skipped", detail=exc.message)
    except TimeoutError:
        return StepResult(step.name, "failed", error=f"timed out after {timeout_s:g} s")
    except AgentError as exc:
        return StepResult(step.name, "failed", error=f"{exc.code}: {exc.message}")
    except Exception as exc:
        log.exception("job %s step %s raised", ctx.job, step.name)
        return StepResult(step.name, "failed", error=f"{type(exc).__name__}: {exc}")
