"""A daemon killed (SIGKILL) mid-run leaves a ``running`` record; the next start marks it
failed/interrupted, the lock is free again, and the job's files are untouched.

Uses the test-only ``selftest`` job (registered only when ``VMAGENT_TEST_JOBS=1``): its
``slow`` mode sleeps 30 s before deleting the files in ``<run_dir>/selftest``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agentproc import AGENT, CTL

pytestmark = pytest.mark.integration



@pytest.fixture
def tmp(short_tmp: Path) -> Path:
    return short_tmp


def serve(tmp: Path) -> subprocess.Popen[bytes]:
    cfg = tmp / "vm-agent.yaml"
    cfg.write_text(f"docker:\n  host: unix://{tmp}/no-docker.sock\n  timeout_s: 1\n"
                   f"sampling:\n  disks: [{tmp}]\n"
                   f"metrics:\n  textfile: {tmp}/vm-agent.prom\n")
    proc = subprocess.Popen(
        [AGENT, "serve", "--config", str(cfg), "--socket", str(tmp / "agent.sock"),
         "--state-dir", str(tmp / "state"), "--run-dir", str(tmp / "run")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "VMAGENT_TEST_JOBS": "1"})
    deadline = time.monotonic() + 15
    while ctl(tmp, "version").returncode != 0:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the daemon never answered"
        time.sleep(0.1)
    return proc


def ctl(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CTL, "--socket", str(tmp / "agent.sock"), "--json", *args],
                          capture_output=True, text=True, timeout=60)


def runs(tmp: Path) -> list[dict[str, Any]]:
    result = ctl(tmp, "runs", "selftest")
    assert result.returncode == 0, result.stderr
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


def test_sigkill_mid_run_is_recorded_as_interrupted_at_next_start(tmp: Path) -> None:
    files = tmp / "run" / "selftest"
    files.mkdir(parents=True)
    (files / "data.bin").write_bytes(b"\0" * 4096)
    proc = serve(tmp)
    try:
        started = ctl(tmp, "run", "selftest", "--mode", "slow", "--no-wait")
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["id"]
        time.sleep(0.5)
        assert runs(tmp)[0]["status"] == "running"
        busy = ctl(tmp, "run", "selftest", "--dry-run")
        assert busy.returncode == 2
        assert json.loads(busy.stdout)["details"]["running_run_id"] == run_id
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    proc = serve(tmp)  # the killed daemon's socket file is still there: a stale one
    try:
        by_id = {r["id"]: r for r in runs(tmp)}  # recovered at start, before any new run
        assert (by_id[run_id]["status"], by_id[run_id]["reason"]) == ("failed", "interrupted")
        assert by_id[run_id]["finished_at"] is not None
        record = json.loads(ctl(tmp, "run", "selftest", "--dry-run").stdout)
        assert record["status"] == "ok"  # the lock died with the killed daemon
        assert (files / "data.bin").exists()  # the kill came before the delete step
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
