"""Breaking the watchdog on the tests' own engine: stops it must not undo, slow stops that
must not stall other containers.  Health intervals are 1 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.containers.events import WatchdogService
from agent.containers.operator import restart_one
from agent.containers.watchdog import Skip
from agent.containers.watchdog_run import watchdog_pass
from agent.errors import Conflict
from tests.integration.dockerd import TEST_IMAGE, TestEngine
from tests.integration.test_watchdog import unhealthy_with_streak, until
from tests.integration.watchdog_kit import (
    FLIP_CHECK,
    NS,
    Kit,
    run_flip,
    set_ok,
    state,
)

pytestmark = pytest.mark.integration

#: PID 1 without a TERM handler: the kernel drops SIGTERM, so ``docker stop`` waits for
#: the whole StopTimeout before SIGKILL (as a Node server without a handler does).
IGNORES_TERM = ["sh", "-c", "while :; do sleep 1; done"]


@pytest.fixture
async def kit(engine: TestEngine, tmp_path: Path) -> AsyncIterator[Kit]:
    made = Kit(engine, tmp_path)
    yield made
    await made.aclose()




def run_slow_to_stop(engine: TestEngine, name: str, *, stop_timeout_s: int,
                     labels: dict[str, str] | None = None) -> str:
    """Unhealthy (no /ok), retries 1, interval 1 s, ignores SIGTERM."""
    api = engine.client().api
    created = api.create_container(
        TEST_IMAGE, IGNORES_TERM, name=name, stop_timeout=stop_timeout_s,
        host_config=api.create_host_config(network_mode="none"),
        healthcheck={"test": FLIP_CHECK, "interval": NS, "timeout": NS, "retries": 1,
                     "start_period": 0},
        labels={"vmagent-test": "1", **(labels or {})})
    api.start(created["Id"])
    return str(created["Id"])


async def test_manual_stop_in_progress_is_not_undone(engine: TestEngine, kit: Kit) -> None:
    run_slow_to_stop(engine, "web", stop_timeout_s=6)
    await until(lambda: unhealthy_with_streak(engine, "web", 3), 15, "web streak 3")
    stopping = asyncio.create_task(asyncio.to_thread(engine.client().api.stop, "web"))
    await asyncio.sleep(1.0)  # docker stop has sent SIGTERM; it waits 6 s for the exit

    report = await watchdog_pass(kit.deps, dry_run=False)
    await stopping

    [skip] = report.actions
    assert isinstance(skip, Skip) and skip.reason.startswith("being stopped"), skip
    await asyncio.sleep(1.0)
    assert state(engine, "web")["Status"] == "exited", "the watchdog undid docker stop"
    assert kit.restarts("web") == []


async def test_compose_down_in_progress_is_neither_restarted_nor_recreated(
        engine: TestEngine, kit: Kit) -> None:
    labels = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
    run_slow_to_stop(engine, "shop-web-1", stop_timeout_s=6, labels=labels)
    await until(lambda: unhealthy_with_streak(engine, "shop-web-1", 3), 15, "streak 3")
    api = engine.client().api

    def compose_down() -> None:  # what `docker compose down` does: stop, then remove
        api.stop("shop-web-1")
        api.remove_container("shop-web-1")

    down = asyncio.create_task(asyncio.to_thread(compose_down))
    await asyncio.sleep(1.0)
    report = await watchdog_pass(kit.deps, dry_run=False)
    await down

    assert api.containers(all=True, filters={"label": "com.docker.compose.project=shop"}) == []
    assert [(a.kind, a.reason[:13]) for a in report.actions] == [("skip", "being stopped")]
    assert [r.result for r in kit.restarts("shop-web-1")] == []


async def test_event_woken_passes_during_a_stop_leave_it_stopped(engine: TestEngine,
                                                                 kit: Kit) -> None:
    svc = WatchdogService(kit.deps, host=engine.host, follow_events=True,
                          backstop_interval_s=600, first_pass_delay_s=0)
    await svc.start()
    try:
        cid = run_slow_to_stop(engine, "web", stop_timeout_s=6)
        await until(lambda: unhealthy_with_streak(engine, "web", 1), 10, "web unhealthy")
        stopping = asyncio.create_task(asyncio.to_thread(engine.client().api.stop, "web"))
        await until(lambda: kit.deps.stops.kills(cid), 5, "the stream saw the kill")
        await stopping  # FailingStreak passed 3 during the 6 s: passes ran, none restarted
        await asyncio.sleep(1.5)
    finally:
        await svc.stop()
    assert state(engine, "web")["Status"] == "exited"
    assert kit.restarts("web") == []
    assert any("being stopped" in e["MESSAGE"] for e in kit.audit("watchdog.skip"))


async def test_a_slow_stop_does_not_hold_up_other_containers(engine: TestEngine,
                                                             kit: Kit) -> None:
    svc = WatchdogService(kit.deps, host=engine.host, follow_events=True,
                          backstop_interval_s=600, first_pass_delay_s=0)
    await svc.start()
    try:
        slow = run_slow_to_stop(engine, "slow", stop_timeout_s=12)  # its restart takes 12 s
        run_flip(engine, "quick")
        engine.wait_health("quick", "healthy", timeout_s=10)
        await until(lambda: kit.deps.stops.kills(slow), 15, "the watchdog is restarting slow")
        set_ok(engine, "quick", ok=False)
        bad_at = time.monotonic()
        await until(lambda: kit.restarts("quick"), 9, "quick restarted while slow stops")
        assert time.monotonic() - bad_at < 9
        await until(lambda: kit.restarts("slow"), 15, "slow's restart recorded")
    finally:
        await svc.stop()
    [record] = kit.restarts("slow")
    assert record.result == "ok" and record.took_s >= 11  # not reported failed early


async def test_two_operator_restarts_at_once_restart_it_once(engine: TestEngine,
                                                            kit: Kit) -> None:
    run_slow_to_stop(engine, "web", stop_timeout_s=3)  # the restart takes 3 s
    first = asyncio.create_task(restart_one(kit.deps, "web"))
    await asyncio.sleep(0.5)
    with pytest.raises(Conflict):  # a double click: no second restart, no second budget slot
        await restart_one(kit.deps, "web")
    assert (await first)["result"] == "restarted"
    assert [r.result for r in kit.restarts("web")] == ["ok"]
    assert kit.deps.restarting == set()


async def test_asking_dockers_event_log_for_a_stop_returns_at_once(engine: TestEngine) -> None:
    """The stop check runs before every restart: it must not wait for Docker.  (It asked
    for events 'until' a second ahead, and Docker streams until then: every restart the
    watchdog decided came 1 s late: the reaction bench went from 0.21 to 1.21 s.)"""
    from agent.containers.engine import DockerEngine
    from agent.containers.model import from_inspect
    from agent.containers.stops import StopLog, being_stopped

    sdk = engine.run_plain("stopcheck-running")
    docker = DockerEngine(engine.host, timeout_s=5)
    try:
        plain = from_inspect(await docker.inspect_container(sdk.id))
        t0 = time.monotonic()
        assert await being_stopped(docker, StopLog(), [plain]) == frozenset()
        assert time.monotonic() - t0 < 0.5
        await asyncio.to_thread(engine.client().api.kill, sdk.id, "SIGTERM")  # as docker stop
        assert await being_stopped(docker, StopLog(), [plain]) == frozenset({sdk.id})
    finally:
        await docker.aclose()
        sdk.remove(force=True)
