"""The container commands while the tests' own Docker engine fails: stopped, hung, back.

Each request's reply is checked against PROTOCOL.md's envelope table and
its audit entries are counted (exactly one per request).  The engine is the
session one; every test leaves it running and resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dockerd import TestEngine
from tests.protocol.conftest import Agent, request, start_agent

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def serve(tmp: Path, docker_host: str) -> AsyncIterator[Agent]:
    agent, _runner, stopper = await start_agent(tmp, docker_host=docker_host)
    try:
        assert agent.services.watchdog is not None
        await agent.services.watchdog.start()  # and with it the event stream (as the daemon)
        yield agent
    finally:
        await stopper.stop()


@contextlib.contextmanager
def hung(engine: TestEngine) -> Iterator[None]:
    """dockerd frozen with SIGSTOP (its socket accepts, nothing answers); resumed after."""
    pid = engine.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def counted(agent: Agent, method: str, path: str) -> tuple[int, dict[str, Any]]:
    """One request; asserts it left exactly one request audit entry, with its result."""
    before = len(agent.audit_entries())
    status, env = await request(agent, method, path, timeout_s=30)
    await asyncio.sleep(0.05)
    entries = [e for e in agent.audit_entries()[before:] if "VMAGENT_REQUEST_ID" in e]
    assert len(entries) == 1, entries
    assert entries[0]["VMAGENT_REQUEST_ID"] == env["request_id"]
    assert entries[0]["VMAGENT_RESULT"] == ("ok" if env["ok"] else env["error"]["code"])
    return status, env


async def until(predicate: Callable[[], Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, f"not within {timeout_s} s"
        await asyncio.sleep(0.2)


async def test_hung_engine_is_504_timeout(engine: TestEngine, short_tmp: Path) -> None:
    """PROTOCOL.md: ``504 timeout`` when the upstream did not answer in time; ``503
    upstream_unavailable`` is for an unreachable one (Prometheus and Ollama do this)."""
    engine.run_plain("frozen")
    async with serve(short_tmp, engine.host) as agent:
        with hung(engine):
            started = time.monotonic()
            status, env = await counted(agent, "GET", "/v1/containers")
            took = time.monotonic() - started
        assert took < 10  # docker.timeout_s is 5 here
        assert (status, env["error"]["code"]) == (504, "timeout"), env
        assert env["error"]["details"]["upstream"] == "docker"


async def test_stopped_engine_is_503_then_recovers(engine: TestEngine,
                                                   short_tmp: Path) -> None:
    engine.run_healthy("web")
    engine.wait_health("web", "healthy")
    async with serve(short_tmp, engine.host) as agent:
        watchdog = agent.services.watchdog
        assert watchdog is not None and watchdog.events is not None
        events = watchdog.events

        async def connected_once() -> bool:
            return events.connects >= 1
        await until(connected_once, 10)
        engine.stop(keep_data=True)
        try:
            async def docker_down() -> bool:
                status, env = await request(agent, "GET", "/v1/health")
                return status == 200 and env["data"]["docker"]["available"] is False
            await until(docker_down, 15)
            _, env = await counted(agent, "GET", "/v1/health")
            assert env["data"]["docker"]["error"]  # a reason is given
            for method, path in (("GET", "/v1/containers"), ("GET", "/v1/containers/unhealthy"),
                                 ("GET", "/v1/containers/web/logs"),
                                 ("GET", "/v1/containers/web/health"),
                                 ("POST", "/v1/containers/web/restart"),
                                 ("POST", "/v1/containers/restart-unhealthy")):
                status, env = await counted(agent, method, path)
                assert (status, env["error"]["code"]) == (503, "upstream_unavailable"), path
                assert env["error"]["details"]["upstream"] == "docker"
        finally:
            engine.start()
        engine.client().api.start("web")

        async def docker_back() -> bool:
            status, env = await request(agent, "GET", "/v1/health")
            return status == 200 and env["data"]["docker"]["available"] is True
        await until(docker_back, 15)

        async def reconnected() -> bool:
            return events.connects >= 2
        await until(reconnected, 20)  # the event stream follows the new engine
        status, env = await counted(agent, "GET", "/v1/containers")
        assert status == 200 and [c["name"] for c in env["data"]] == ["web"]
