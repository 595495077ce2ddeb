"""The job runner with a small real job that deletes temp files it created."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from agent.audit import Auditor
from agent.config import Config, JobsConfig, SamplingConfig
from agent.errors import BadRequest, Conflict, Locked, NotFound
from agent.hold import HoldStore
from agent.jobs.base import Job, JobContext, Step, StepResult
from agent.jobs.lock import JobLock
from agent.jobs.records import RunRecords
from agent.jobs.runner import JobRunner
from agent.journal import JournalWriter
from agent.notify.events import AlertLog
from agent.store import Store


class FileJob:
    """Deletes the files of ``root``; modes add steps that raise, fail, or sleep."""

    name = "files"
    modes = ("standard", "broken", "all-fail", "plan-fails", "slow")
    default_mode = "standard"
    destructive = True

    def __init__(self, root: Path, sleep_s: float = 5.0) -> None:
        self.root = root
        self.sleep_s = sleep_s

    async def plan(self, ctx: JobContext, mode: str) -> list[Step]:
        if mode == "plan-fails":
            raise OSError("cannot list")
        files = sorted(p for p in self.root.iterdir() if p.is_file())
        steps = [Step(f"delete:{p.name}", "delete", str(p), p.stat().st_size, {"path": str(p)})
                 for p in files]
        if mode == "broken":  # the raising step comes first: the deletes must still run
            steps.insert(0, Step("explode", "raise"))
        if mode == "all-fail":
            steps = [Step("explode", "raise"), Step("refuse", "fail")]
        if mode == "slow":
            steps.insert(0, Step("sleep", "sleep"))
        return steps

    async def execute(self, ctx: JobContext, step: Step, *, dry_run: bool) -> StepResult:
        if step.kind == "raise":
            raise ValueError("boom")
        if step.kind == "fail":
            return StepResult(step.name, "failed", error="refused on purpose")
        if step.kind == "sleep":
            await asyncio.sleep(self.sleep_s)
            return StepResult(step.name, "ok")
        return _delete(step, Path(step.args["path"]), dry_run=dry_run)


def _delete(step: Step, path: Path, *, dry_run: bool) -> StepResult:
    size = path.stat().st_size
    if not dry_run:
        path.unlink()
    return StepResult(step.name, "planned" if dry_run else "ok", size, detail=str(path))


@dataclass
class Env:
    runner: JobRunner
    root: Path
    records: RunRecords
    alerts: AlertLog
    hold: HoldStore
    cfg: Config


def make_env(tmp: Path, jobs_cfg: JobsConfig | None = None, *, job: Job | None = None) -> Env:
    root = tmp / "files"
    root.mkdir(exist_ok=True)
    cfg = replace(Config(), state_dir=str(tmp / "state"), run_dir=str(tmp / "run"),
                  sampling=SamplingConfig(disks=(str(tmp),)), jobs=jobs_cfg or JobsConfig())
    store = Store(cfg.state_dir)
    auditor = Auditor(JournalWriter(socket_path=str(tmp / "no.sock"), stream=io.StringIO()))
    alerts = AlertLog(store, auditor)
    hold = HoldStore(cfg.state_dir)
    records = RunRecords(store)
    the_job = job or FileJob(root)
    runner = JobRunner(jobs={the_job.name: the_job}, records=records, config=cfg,
                       auditor=auditor, hold=hold, alerts=alerts)
    return Env(runner, root, records, alerts, hold, cfg)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = make_env(tmp_path)
    yield e
    await e.runner.close()


def make_files(root: Path, sizes: tuple[int, ...] = (1000, 20000, 300000)) -> int:
    for i, size in enumerate(sizes):
        (root / f"f{i}.bin").write_bytes(os.urandom(size))
    return sum(sizes)


async def test_ok_run_deletes_and_records_everything(env: Env) -> None:
    total = make_files(env.root)
    rec = await env.runner.run("files", trigger="cli", peer="uid=0")
    assert rec["status"] == "ok" and rec["reason"] is None
    assert rec["freed_bytes"] == total
    assert list(env.root.iterdir()) == []
    assert [s["status"] for s in rec["steps"]] == ["ok"] * 3
    assert [s["freed_bytes"] for s in rec["steps"]] == [1000, 20000, 300000]
    assert rec["trigger"] == "cli" and rec["peer"] == "uid=0" and rec["mode"] == "standard"
    assert rec["disk_before"][0]["mount"] == str(env.root.parent)
    assert rec["disk_after"][0]["used_bytes"] > 0
    assert rec["started_at"].endswith("Z") and rec["finished_at"].endswith("Z")
    assert await env.runner.record(rec["id"]) == rec


async def test_dry_run_changes_nothing_and_reports_the_same_bytes(env: Env) -> None:
    total = make_files(env.root)
    before = {p: p.read_bytes() for p in env.root.iterdir()}
    dry = await env.runner.run("files", dry_run=True)
    assert dry["status"] == "ok" and dry["dry_run"] is True
    assert [s["status"] for s in dry["steps"]] == ["planned"] * 3
    assert {p: p.read_bytes() for p in env.root.iterdir()} == before
    real = await env.runner.run("files")
    assert dry["freed_bytes"] == real["freed_bytes"] == total


async def test_a_raising_step_never_stops_the_others(env: Env) -> None:
    make_files(env.root)
    rec = await env.runner.run("files", mode="broken")
    assert rec["status"] == "partial"
    assert rec["steps"][0]["status"] == "failed"
    assert rec["steps"][0]["error"] == "ValueError: boom"
    assert [s["status"] for s in rec["steps"][1:]] == ["ok"] * 3
    assert list(env.root.iterdir()) == []
    assert "explode" in rec["reason"]
    assert env.alerts.recent() == []  # partial is not failed


async def test_all_steps_failing_is_failed_and_alerts(env: Env) -> None:
    rec = await env.runner.run("files", mode="all-fail")
    assert rec["status"] == "failed"
    assert [s["error"] for s in rec["steps"]] == ["ValueError: boom", "refused on purpose"]
    alert = env.alerts.recent()[0]
    assert (alert.kind, alert.subject) == ("job.failed", "files")
    assert str(rec["id"]) in alert.text


async def test_plan_raising_is_a_failed_record(env: Env) -> None:
    rec = await env.runner.run("files", mode="plan-fails")
    assert rec["status"] == "failed" and rec["steps"] == []
    assert rec["reason"] == "plan failed: OSError: cannot list"
    assert not JobLock(env.cfg.run_dir, "files").is_locked()


async def test_hold_refuses_with_423_and_a_skipped_record(env: Env) -> None:
    make_files(env.root)
    env.hold.set("migrating disks", by="test")
    with pytest.raises(Locked) as err:
        await env.runner.run("files")
    skipped = await env.runner.record(err.value.details["run_id"])
    assert skipped["status"] == "skipped" and skipped["steps"] == []
    assert "migrating disks" in skipped["reason"]
    assert len(list(env.root.iterdir())) == 3
    dry = await env.runner.run("files", dry_run=True)  # a dry-run still works
    assert dry["status"] == "ok" and len(list(env.root.iterdir())) == 3
    assert not JobLock(env.cfg.run_dir, "files").is_locked()


_HOLDER = """
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, json.dumps({"run_id": int(sys.argv[2]), "pid": os.getpid()}).encode())
print("locked", flush=True)
time.sleep(60)
"""


def hold_lock_in_child(lock_file: Path, run_id: int) -> subprocess.Popen[str]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock_file), str(run_id)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "locked\n"
    return child


async def test_lock_held_by_another_process_is_409_with_its_run_id(env: Env) -> None:
    make_files(env.root)
    running = env.records.start(job="files", mode="standard", dry_run=False, trigger="cli",
                                peer=None, pid=1)
    child = hold_lock_in_child(JobLock(env.cfg.run_dir, "files").path, running)
    try:
        with pytest.raises(Conflict) as err:
            await env.runner.run("files")
        assert err.value.details["running_run_id"] == running
        refused = await env.runner.record(err.value.details["run_id"])
        assert refused["status"] == "skipped" and str(running) in refused["reason"]
        assert len(list(env.root.iterdir())) == 3
        assert await env.runner.recover_stale() == []  # its lock is held: not stale
    finally:
        child.kill()
        child.wait()
    assert await env.runner.recover_stale() == [running]  # the holder died: stale
    rec = await env.runner.run("files")
    assert rec["status"] == "ok"


async def test_second_request_in_the_same_process_is_409(tmp_path: Path) -> None:
    env = make_env(tmp_path, job=FileJob(tmp_path / "files", sleep_s=1))
    make_files(env.root)
    first = await env.runner.run("files", mode="slow", wait=False)
    assert first["status"] == "running"
    with pytest.raises(Conflict) as err:
        await env.runner.run("files", dry_run=True)
    assert err.value.details["running_run_id"] == first["id"]
    assert (await env.runner.record(first["id"]))["status"] == "running"
    await env.runner.close()  # the 1 s step ends within the 5 s grace
    done = await env.runner.record(first["id"])
    assert done["status"] == "ok" and done["freed_bytes"] == 321000


async def test_shutdown_cancels_and_records_interrupted(tmp_path: Path) -> None:
    env = make_env(tmp_path, JobsConfig(shutdown_grace_s=0.1), job=FileJob(
        tmp_path / "files", sleep_s=60))
    first = await env.runner.run("files", mode="slow", wait=False)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await env.runner.close()
    assert time.monotonic() - started < 5
    rec = await env.runner.record(first["id"])
    assert (rec["status"], rec["reason"]) == ("failed", "interrupted")
    assert not JobLock(env.cfg.run_dir, "files").is_locked()


async def test_a_hung_step_times_out_as_failed(tmp_path: Path) -> None:
    env = make_env(tmp_path, JobsConfig(step_timeout_s=1), job=FileJob(
        tmp_path / "files", sleep_s=60))
    make_files(env.root, (10,))
    rec = await env.runner.run("files", mode="slow")
    assert rec["status"] == "partial"
    assert rec["steps"][0]["error"] == "timed out after 1 s"
    assert rec["steps"][1]["status"] == "ok"


async def test_unknown_job_and_mode_are_refused_before_any_record(env: Env) -> None:
    with pytest.raises(NotFound):
        await env.runner.run("nope")
    with pytest.raises(BadRequest) as err:
        await env.runner.run("files", mode="weekly")
    assert err.value.details["field"] == "mode"
    assert env.records.recent("files", 10) == []


async def test_records_are_pruned_by_count_and_age(tmp_path: Path) -> None:
    env = make_env(tmp_path, JobsConfig(keep_runs=3, keep_days=1))
    old = env.records.start(job="files", mode="standard", dry_run=True, trigger="timer",
                            peer=None, pid=1, status="ok", now=time.time() - 2 * 86400)
    ids = [(await env.runner.run("files", dry_run=True))["id"] for _ in range(5)]
    kept = [r["id"] for r in env.records.recent("files", 100)]
    assert kept == ids[:-4:-1]  # newest 3, newest first
    assert await asyncio.to_thread(env.records.get, old) is None


async def test_audit_says_planned_and_did(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    make_files(env.root, (5,))
    rec = await env.runner.run("files")
    stream = env.runner.auditor.writer.stream
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]  # type: ignore[attr-defined]
    actions = [e["VMAGENT_ACTION"] for e in entries if e.get("VMAGENT_RUN_ID") == rec["id"]]
    assert actions == ["job.start", "job.step", "job.finish"]


def test_context_is_given_to_jobs(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    ctx = env.runner._context(env.runner.job("files"), "standard", dry_run=True)
    assert ctx.mounts == (str(tmp_path),) and ctx.dry_run and ctx.job == "files"
    assert isinstance(asyncio.run(ctx.measure_disks())[0].total_bytes, int)
