"""A hold set after a run started: every step is skipped, and the run says so (it was
recorded ``ok`` with no reason)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.jobs.base import JobContext, Step, StepResult
from tests.unit.test_job_runner import Env, FileJob, make_env, make_files


class HeldFileJob(FileJob):
    """FileJob whose steps check the hold first, as the destructive jobs do."""

    async def execute(self, ctx: JobContext, step: Step, *, dry_run: bool) -> StepResult:
        if not dry_run:
            ctx.check_hold(f"step {step.name}")
        return await super().execute(ctx, step, dry_run=dry_run)

    async def plan(self, ctx: JobContext, mode: str) -> list[Step]:
        steps = await super().plan(ctx, mode)
        ctx.hold.set("disk swap started meanwhile", by="test")  # set after the run began
        return steps


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[Env]:
    e = make_env(tmp_path, job=HeldFileJob(tmp_path / "files"))
    yield e
    await e.runner.close()


async def test_a_hold_set_mid_run_makes_the_run_skipped_with_its_reason(held: Env) -> None:
    make_files(held.root)
    rec = await held.runner.run("files")
    assert [s["status"] for s in rec["steps"]] == ["skipped"] * 3
    assert rec["status"] == "skipped"
    assert "disk swap started meanwhile" in rec["reason"]
    assert len(list(held.root.iterdir())) == 3  # nothing deleted


async def test_skipped_steps_without_a_hold_leave_the_run_ok(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    try:
        rec = await env.runner.run("files")  # no files: no steps at all
        assert rec["status"] == "ok" and rec["reason"] is None
    finally:
        await env.runner.close()
