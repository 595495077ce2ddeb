"""The ``watchdog`` job: one watchdog pass wrapped in a run record, on the tests' own engine."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.audit import Auditor
from agent.config import Config, DockerConfig, WatchdogConfig
from agent.containers.engine import DockerEngine
from agent.containers.events import build_watchdog_service
from agent.hold import HoldStore
from agent.jobs.records import RunRecords
from agent.jobs.runner import JobRunner
from agent.jobs.watchdog_job import WatchdogJob
from agent.journal import JournalWriter
from agent.notify.events import AlertLog
from agent.store import Store
from tests.integration.dockerd import TestEngine

pytestmark = pytest.mark.integration


def make_runner(tmp: Path, host: str) -> tuple[JobRunner, HoldStore, DockerEngine]:
    cfg = replace(Config(), state_dir=str(tmp / "state"), run_dir=str(tmp / "run"),
                  docker=DockerConfig(host=host, timeout_s=20),
                  watchdog=WatchdogConfig(failures_before_restart=1, events=False,
                                          protected=()))
    store, hold = Store(cfg.state_dir), HoldStore(cfg.state_dir)
    auditor = Auditor(JournalWriter(socket_path=str(tmp / "no.sock"), stream=io.StringIO()))
    alerts = AlertLog(store, auditor)
    docker = DockerEngine(host, 20)
    services = SimpleNamespace(watchdog=build_watchdog_service(
        cfg, docker, store=store, alerts=alerts, auditor=auditor, hold=hold))
    runner = JobRunner(jobs={"watchdog": WatchdogJob()}, records=RunRecords(store), config=cfg,
                       auditor=auditor, hold=hold, alerts=alerts, services=services)
    return runner, hold, docker


async def test_watchdog_job_dry_run_then_real_then_under_hold(
        engine: TestEngine, tmp_path: Path) -> None:
    engine.run_unhealthy("wdjob-sick")
    engine.wait_health("wdjob-sick", "unhealthy")
    runner, hold, docker = make_runner(tmp_path, engine.host)
    try:
        dry = await runner.run("watchdog", dry_run=True, trigger="timer")
        assert (dry["status"], dry["steps"][0]["status"]) == ("ok", "planned")
        assert "restart wdjob-sick" in dry["steps"][0]["detail"]
        hold.set("maintenance window", by="test")
        held = await runner.run("watchdog")  # not refused: the pass itself skips under a hold
        assert held["status"] == "ok" and "hold active" in held["steps"][0]["detail"]
        assert "restart wdjob-sick" not in held["steps"][0]["detail"]
        hold.clear()
        real = await runner.run("watchdog")
        assert real["status"] == "ok", real
        assert "restart wdjob-sick" in real["steps"][0]["detail"]
        assert real["freed_bytes"] == 0
    finally:
        await docker.aclose()
