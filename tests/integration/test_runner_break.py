"""The job runner and ``make install`` attacked as an operator would (a breaking session).

A real daemon on a temp socket with the test-only ``selftest`` job (``VMAGENT_TEST_JOBS=1``):
two runs posted at the same instant, SIGKILL mid-run and restarts (one alert per killed
run), a lock path that cannot be opened at start-up.  A runner in a child process whose
file-size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored) makes the state store's writes fail as
on a full disk.  ``scripts/install.sh`` staged with ``DESTDIR`` (the packaging path).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_job_interrupt import ctl, runs, serve
from tests.integration.test_units import checkout_copy

pytestmark = pytest.mark.integration


@pytest.fixture
def tmp(short_tmp: Path) -> Path:
    return short_tmp


def post_run(tmp: Path, trigger: str, out: list[dict[str, Any]]) -> None:
    result = ctl(tmp, "run", "selftest", "--mode", "slow", "--no-wait", "--trigger", trigger)
    out.append(json.loads(result.stdout))


def alerts(tmp: Path) -> list[str]:
    with sqlite3.connect(tmp / "state" / "vm-agent.db") as db:
        return [r[0] for r in db.execute(
            "SELECT text FROM alert_events WHERE kind = 'job.failed' ORDER BY id")]


def stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` and wait; a daemon still there after 30 s is killed (never left behind)
    and the test fails."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise


def test_same_instant_runs_and_kills_leave_one_record_each_and_one_alert(tmp: Path) -> None:
    """A timer and an operator post at the same instant: one runs, one is 409 naming it; the
    daemon is SIGKILLed mid-run and restarted, three times: each killed run ends failed, one
    job.failed alert each (no second one at a later start), the lock free."""
    killed = []
    for _ in range(3):
        proc = serve(tmp)
        try:
            answers: list[dict[str, Any]] = []
            posts = [threading.Thread(target=post_run, args=(tmp, t, answers))
                     for t in ("timer", "cli")]
            for t in posts:
                t.start()
            for t in posts:
                t.join(timeout=60)
            started = [a for a in answers if a.get("status") == "running"]
            refused = [a for a in answers if a.get("code") == "conflict"]
            assert len(started) == 1 and len(refused) == 1, answers
            assert refused[0]["details"]["running_run_id"] == started[0]["id"]
            killed.append(started[0]["id"])
        finally:
            stop(proc, signal.SIGKILL)
    proc = serve(tmp)
    try:
        by_id = {r["id"]: r for r in runs(tmp)}
        assert [by_id[i]["status"] for i in killed] == ["failed"] * 3
        assert not [r for r in by_id.values() if r["status"] == "running"]
        assert json.loads(ctl(tmp, "run", "selftest", "--dry-run").stdout)["status"] == "ok"
    finally:
        stop(proc, signal.SIGTERM)
    assert alerts(tmp) == [f"job selftest run {i} failed: interrupted" for i in killed]


def test_a_lock_path_that_cannot_be_opened_does_not_stop_the_daemon(tmp: Path) -> None:
    """A run killed mid-way, then its lock path made a directory: the daemon still starts,
    the run is refused with a failed record naming the lock, and the other jobs work."""
    proc = serve(tmp)
    try:
        run_id = json.loads(ctl(tmp, "run", "selftest", "--mode", "slow", "--no-wait").stdout)["id"]
    finally:
        stop(proc, signal.SIGKILL)
    lock = tmp / "run" / "jobs" / "selftest.lock"
    lock.unlink()
    lock.mkdir()
    proc = serve(tmp)  # before the fix: recovery raised IsADirectoryError and start-up failed
    try:
        refused = ctl(tmp, "run", "selftest", "--dry-run")
        assert refused.returncode != 0
        error = json.loads(refused.stdout)
        assert error["code"] == "internal" and str(lock) in error["message"]
        record = json.loads(ctl(tmp, "runs", "selftest").stdout)[0]
        assert record["id"] == error["details"]["run_id"] and record["status"] == "failed"
        assert {r["id"]: r["status"] for r in runs(tmp)}[run_id] == "running"  # left alone
        assert ctl(tmp, "runs", "watchdog").returncode == 0
    finally:
        stop(proc, signal.SIGTERM)


FULL_DISK = textwrap.dedent("""
    import asyncio, json, resource, signal, sys
    from pathlib import Path
    from tests.unit.test_job_runner import make_env
    from tests.unit.test_runner_break import RaisingJob
    from agent.errors import AgentError
    from agent.jobs.lock import JobLock

    tmp = Path(sys.argv[1])
    job = RaisingJob(tmp / "files")
    env = make_env(tmp, job=job)
    state = Path(env.cfg.state_dir)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, as ENOSPC
    limit = max(p.stat().st_size for p in state.iterdir())
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    async def main() -> dict:
        try:
            await env.runner.run("files")
            error = None
        except AgentError as exc:
            error = exc.to_wire()
        return {"error": error, "ran": job.ran,
                "locked": JobLock(env.cfg.run_dir, "files").is_locked()}
    print(json.dumps(asyncio.run(main())))
""")


def test_a_full_disk_refuses_the_run_with_a_reason_and_frees_the_lock(tmp: Path) -> None:
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp)], capture_output=True,
                            text=True, timeout=60, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.splitlines()[-1])
    assert got["error"]["code"] == "internal"
    assert "run record could not be written" in got["error"]["message"]
    assert got["ran"] == [] and got["locked"] is False


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``DESTDIR=<tmp>/stage scripts/install.sh /opt/vm-agent``, twice (an upgrade), with an
    operator's edit of the staged config in between.  Nothing outside the temp dir."""
    work = tmp_path_factory.mktemp("destdir")
    src = checkout_copy(work / "src")
    env = {**os.environ, "DESTDIR": str(work / "stage"), "PIP_CACHE_DIR": str(work / "pip")}
    for n in (1, 2):
        result = subprocess.run([str(src / "scripts" / "install.sh"), "/opt/vm-agent"],
                                capture_output=True, text=True, timeout=600, env=env)
        (work / f"run{n}.log").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout + result.stderr
        if n == 1:
            with (work / "stage/etc/vm-agent/vm-agent.yaml").open("a") as f:
                f.write("# edited by the operator\n")
    return work


def test_destdir_stages_a_verified_install_and_keeps_the_config(staged: Path) -> None:
    stage = staged / "stage"
    assert os.readlink(stage / "usr/local/bin/vm-agentctl") == "/opt/vm-agent/bin/vm-agentctl"
    units = stage / "etc/systemd/system"
    assert (units / "vm-agent.service").is_file() and (units / "vm-agent-cleanup-weekly.timer")
    assert "systemd-analyze verify (timers): ok" in (staged / "run2.log").read_text()
    conf = stage / "etc/vm-agent/vm-agent.yaml"
    assert conf.read_text().endswith("# edited by the operator\n")
    assert oct(conf.stat().st_mode & 0o777) == "0o644"
    assert (stage / "etc/sudoers.d/vm-agent").stat().st_mode & 0o777 == 0o440 or not shutil.which(
        "visudo")
    for path in (stage / "var/lib/vm-agent", stage / "run/vm-agent"):
        assert not path.exists()  # state and the socket folder belong to systemd at run time
