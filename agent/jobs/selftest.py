"""``selftest``: a test-only job, registered only when ``VMAGENT_TEST_JOBS=1``.

It deletes the regular files directly inside ``<run_dir>/selftest/`` (never
following symlinks, never descending), so tests can watch a real
destructive job: dry-run vs real run, the hold, single flight.  Modes:

* ``quick``: one ``delete`` step per file;
* ``slow``: a ``sleep`` step of 30 s first (to kill a daemon mid-run);
* ``fail``: the deletes plus a step that raises (status ``partial``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agent.jobs.base import JobContext, Step, StepResult

SLOW_SLEEP_S = 30.0


class SelfTestJob:
    """See the module docstring."""

    name = "selftest"
    modes = ("quick", "slow", "fail")
    default_mode = "quick"
    destructive = True

    async def plan(self, ctx: JobContext, mode: str) -> list[Step]:
        """Sleep (slow), one delete per file of ``<run_dir>/selftest`` (bytes), raise (fail)."""
        steps = [Step("sleep", "sleep", f"sleep {SLOW_SLEEP_S:g} s")] if mode == "slow" else []
        steps += [Step(f"delete:{p.name}", "delete", f"delete {p}", size, {"path": str(p)})
                  for p, size in _files(Path(ctx.config.run_dir) / "selftest")]
        if mode == "fail":
            steps.append(Step("raise", "raise", "a step that raises"))
        return steps

    async def execute(self, ctx: JobContext, step: Step, *, dry_run: bool) -> StepResult:
        """Dispatch on ``step.kind``; ``delete`` frees the file's size (bytes)."""
        if step.kind == "sleep":
            if not dry_run:
                await asyncio.sleep(SLOW_SLEEP_S)
            return StepResult(step.name, "planned" if dry_run else "ok", detail=step.detail)
        if step.kind == "delete":
            return _delete(step, dry_run=dry_run)
        raise RuntimeError(f"step {step.name} raised on purpose")


def _files(root: Path) -> list[tuple[Path, int]]:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    return [(Path(e.path), e.stat(follow_symlinks=False).st_size) for e in entries
            if e.is_file(follow_symlinks=False)]


def _delete(step: Step, *, dry_run: bool) -> StepResult:
    path = Path(step.args["path"])
    try:
        size = path.lstat().st_size
    except FileNotFoundError:
        return StepResult(step.name, "skipped", detail=f"{path} is gone")
    if dry_run:
        return StepResult(step.name, "planned", size, detail=f"would delete {path}")
    path.unlink()
    return StepResult(step.name, "ok", size, detail=f"deleted {path}")
