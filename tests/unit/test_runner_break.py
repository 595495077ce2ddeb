"""The job runner attacked in-process (a breaking session): BaseException from a step,
two runs at the same instant, a lock file left by a dead run, a lock path that cannot be
opened, a clock that jumps back, the run-records database locked by another process.

Each case is a real runner on a real SQLite store and real lock files in a temp tree.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.errors import AgentError, Conflict
from agent.jobs.base import JobContext, Step, StepResult
from agent.jobs.lock import JobLock
from tests.unit.test_job_runner import Env, FileJob, make_env


class RaisingJob(FileJob):
    """Mode ``kbd`` raises KeyboardInterrupt, ``exit`` SystemExit, ``slow`` sleeps 0.2 s;
    ``three`` runs steps a, b, c and calls ``on_step`` before each."""

    modes = ("kbd", "exit", "slow", "three")
    default_mode = "three"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ran: list[str] = []
        self.on_step: dict[str, object] = {}

    async def plan(self, ctx: JobContext, mode: str) -> list[Step]:
        if mode == "three":
            return [Step(n, "ok") for n in ("a", "b", "c")]
        return [Step("first", mode), Step("second", "ok")]

    async def execute(self, ctx: JobContext, step: Step, *, dry_run: bool) -> StepResult:
        if step.kind == "kbd":
            raise KeyboardInterrupt
        if step.kind == "exit":
            raise SystemExit(3)
        if step.kind == "slow":
            await asyncio.sleep(0.2)
        hook = self.on_step.get(step.name)
        if callable(hook):
            hook(ctx)
        self.ran.append(step.name)
        return StepResult(step.name, "ok", 10)


def raising_env(tmp: Path) -> tuple[Env, RaisingJob]:
    job = RaisingJob(tmp / "files")
    return make_env(tmp, job=job), job


@pytest.mark.parametrize(("mode", "exc"), [("kbd", KeyboardInterrupt), ("exit", SystemExit)])
def test_base_exception_in_a_step_leaves_no_running_record(tmp_path: Path, mode: str,
                                                          exc: type[BaseException]) -> None:
    env, _ = raising_env(tmp_path)

    async def go() -> None:
        await env.runner.run("files", mode=mode)

    with pytest.raises(exc):
        asyncio.run(go())  # the process is exiting: the runner does not swallow it
    (rec,) = env.records.recent("files", 10)
    assert (rec["status"], rec["finished_at"] is not None) == ("failed", True)
    assert exc.__name__ in (rec["reason"] or "")
    assert not JobLock(env.cfg.run_dir, "files").is_locked()
    assert asyncio.run(env.runner.recover_stale()) == []  # nothing left for the next start
    assert len(env.alerts.recent()) == 1  # one job.failed, not a second at the next start


async def test_two_runs_at_the_same_instant_409_names_the_winner(tmp_path: Path) -> None:
    env, _ = raising_env(tmp_path)
    for _ in range(20):
        results = await asyncio.gather(
            env.runner.run("files", mode="slow", trigger="timer"),
            env.runner.run("files", mode="slow", trigger="api"), return_exceptions=True)
        won = [r for r in results if isinstance(r, dict)]
        lost = [r for r in results if isinstance(r, Conflict)]
        assert len(won) == 1 and len(lost) == 1, results
        assert lost[0].details["running_run_id"] == won[0]["id"]
        skipped = await env.runner.record(lost[0].details["run_id"])
        assert skipped["status"] == "skipped"
        assert skipped["reason"] == f"already running (run {won[0]['id']})"
    await env.runner.close()


def test_a_dead_runs_lock_contents_are_gone_once_the_lock_is_taken(tmp_path: Path) -> None:
    """A SIGKILLed holder leaves its JSON in the file (the kernel drops only the flock): the
    next holder must not be reported as that dead run before it names its own."""
    lock = JobLock(tmp_path / "run", "files")
    lock.path.parent.mkdir(parents=True)
    lock.path.write_text('{"run_id": 999999, "pid": 999999}\n')
    assert lock.acquire()
    try:
        assert JobLock(tmp_path / "run", "files").owner() is None
    finally:
        lock.release()


@pytest.mark.parametrize("breakage", ["lock_is_a_directory", "jobs_dir_is_a_file"])
async def test_an_unusable_lock_path_is_a_failed_record_and_recovery_goes_on(
        tmp_path: Path, breakage: str) -> None:
    env, job = raising_env(tmp_path)
    path = JobLock(env.cfg.run_dir, "files").path
    stale = env.records.start(job="files", mode="three", dry_run=False, trigger="timer",
                              peer=None, pid=1)  # a run killed before the lock broke
    if breakage == "lock_is_a_directory":
        path.mkdir(parents=True)
    else:
        path.parent.parent.mkdir(parents=True)
        path.parent.write_text("not a folder")
    assert await env.runner.recover_stale() == []  # no crash at start-up: left as it is
    with pytest.raises(AgentError) as err:
        await env.runner.run("files")
    assert err.value.code == "internal" and str(path.parent) in err.value.message
    refused = await env.runner.record(err.value.details["run_id"])
    assert refused["status"] == "failed" and "job lock" in refused["reason"]
    assert job.ran == []
    assert (await env.runner.record(stale))["status"] == "running"
    if path.is_dir():
        path.rmdir()
    else:
        path.parent.unlink()
    assert await env.runner.recover_stale() == [stale]
    assert (await env.runner.run("files"))["status"] == "ok"


def test_a_clock_stepped_back_never_gives_a_negative_duration(tmp_path: Path) -> None:
    env, _ = raising_env(tmp_path)
    run_id = env.records.start(job="files", mode="three", dry_run=False, trigger="api",
                               peer=None, pid=1, now=time.time() + 3600)
    env.records.finish(run_id, status="ok", reason=None, disk_after=None)
    rec = env.records.get(run_id)
    assert rec is not None and rec["duration_s"] == 0
    assert rec["finished_at"] == rec["started_at"]


HOLD_DB = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def lock_db_in_child(ctx: JobContext, seconds: float) -> subprocess.Popen[str]:
    db = Path(ctx.config.state_dir) / "vm-agent.db"
    child = subprocess.Popen([sys.executable, "-c", HOLD_DB, str(db), str(seconds)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    return child


async def test_db_locked_mid_run_still_runs_every_step_and_records_them(
        tmp_path: Path) -> None:
    """Another process holds ``BEGIN EXCLUSIVE`` on the store (6 s, past the 5 s busy
    timeout) right after step a: b and c still run, and all three steps are in the record."""
    env, job = raising_env(tmp_path)
    children: list[subprocess.Popen[str]] = []
    job.on_step["a"] = lambda ctx: children.append(lock_db_in_child(ctx, 6))
    try:
        rec = await env.runner.run("files")
    finally:
        for child in children:
            child.wait(timeout=30)
    assert job.ran == ["a", "b", "c"]
    assert [s["name"] for s in rec["steps"]] == ["a", "b", "c"]
    assert (rec["status"], rec["freed_bytes"]) == ("ok", 30)
    assert not JobLock(env.cfg.run_dir, "files").is_locked()
