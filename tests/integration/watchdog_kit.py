"""Shared helpers for the container/watchdog integration tests (real test engine)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from docker.models.containers import Container as SdkContainer

from agent.audit import Auditor
from agent.config import WatchdogConfig
from agent.containers.engine import DockerEngine
from agent.containers.history import WatchdogHistory
from agent.containers.inventory import Inventory
from agent.containers.watchdog_run import WatchdogDeps
from agent.hold import HoldStore
from agent.journal import JournalWriter
from agent.notify.events import AlertLog
from agent.store import Store
from tests.integration.dockerd import TEST_IMAGE, TestEngine

NS = 1_000_000_000
#: Healthy while /ok exists; the main process creates it at every start.
FLIP_CHECK = ["CMD", "test", "-f", "/ok"]
STARTS_OK = ["sh", "-c", "touch /ok; trap 'exit 0' TERM; while :; do sleep 1; done"]
STARTS_BAD = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]


def run_flip(engine: TestEngine, name: str, *, healthy_at_start: bool = True, retries: int = 1,
             labels: dict[str, str] | None = None, **kwargs: Any) -> SdkContainer:
    """A container whose HEALTHCHECK (every 1 s) passes while /ok exists."""
    hc = {"test": FLIP_CHECK, "interval": NS, "timeout": NS, "retries": retries,
          "start_period": 0}
    return engine.client().containers.run(
        TEST_IMAGE, STARTS_OK if healthy_at_start else STARTS_BAD, name=name, detach=True,
        network_mode="none", healthcheck=hc, labels={"vmagent-test": "1", **(labels or {})},
        **kwargs)


def set_ok(engine: TestEngine, name: str, *, ok: bool) -> None:
    """Make ``name``'s health check pass (create /ok) or fail (remove it)."""
    cmd = ["touch", "/ok"] if ok else ["rm", "-f", "/ok"]
    api = engine.client().api
    api.exec_start(api.exec_create(name, cmd)["Id"])


def state(engine: TestEngine, name: str) -> dict[str, Any]:
    result: dict[str, Any] = engine.client().api.inspect_container(name)["State"]
    return result


def wait_for(what: Callable[[], Any], timeout_s: float, message: str) -> Any:
    """Poll ``what()`` every 0.1 s until truthy; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := what()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s: {message}")
        time.sleep(0.1)
    return value


class Kit:
    """WatchdogDeps on the test engine with a temp store and an in-memory audit stream."""

    def __init__(self, engine: TestEngine, tmp: Path, **cfg: Any) -> None:
        self.audit_stream = io.StringIO()
        auditor = Auditor(JournalWriter(socket_path=str(tmp / "no-journal.sock"),
                                        stream=self.audit_stream))
        self.store = Store(tmp / "state")
        self.hold = HoldStore(tmp / "state")
        self.docker = DockerEngine(engine.host, timeout_s=5)
        self.deps = WatchdogDeps(
            inventory=Inventory(self.docker), history=WatchdogHistory(self.store),
            alerts=AlertLog(self.store, auditor), auditor=auditor, hold=self.hold,
            config=replace(WatchdogConfig(), **cfg))

    def audit(self, action: str) -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in self.audit_stream.getvalue().splitlines()]
        return [e for e in entries if e.get("VMAGENT_ACTION") == action]

    def restarts(self, name: str) -> list[Any]:
        return self.deps.history.restarts(container=name)

    def alerts(self, kind: str) -> list[Any]:
        return [a for a in self.deps.alerts.recent() if a.kind == kind]

    async def aclose(self) -> None:
        await self.docker.aclose()
        self.store.close()
