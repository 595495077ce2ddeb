"""The watchdog against the tests' own Docker engine: real health checks, real restarts,
real event stream.  Health intervals are 1 s; each test takes a few seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.containers.events import WatchdogService
from agent.containers.inventory import Inventory
from agent.containers.operator import restart_one
from agent.containers.watchdog import GiveUp, Restart, Skip
from agent.containers.watchdog_run import watchdog_pass
from agent.errors import RateLimited
from tests.integration.dockerd import TestEngine
from tests.integration.watchdog_kit import Kit, run_flip, set_ok, state, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def kit(engine: TestEngine, tmp_path: Path) -> AsyncIterator[Kit]:
    made = Kit(engine, tmp_path, protected=("keep-me",), max_restarts=2)
    yield made
    await made.aclose()


@pytest.fixture
async def service(kit: Kit, engine: TestEngine) -> AsyncIterator[WatchdogService]:
    svc = WatchdogService(kit.deps, host=engine.host, follow_events=True,
                          backstop_interval_s=600, first_pass_delay_s=0)
    await svc.start()
    assert svc.events is not None
    await asyncio.to_thread(wait_for, lambda: svc.events and svc.events.connects, 10,
                            "event stream connected")
    yield svc
    await svc.stop()


async def until(what: Any, timeout_s: float, message: str) -> Any:
    return await asyncio.to_thread(wait_for, what, timeout_s, message)


def unhealthy_with_streak(engine: TestEngine, name: str, streak: int) -> bool:
    s = state(engine, name)
    return s["Health"]["Status"] == "unhealthy" and s["Health"]["FailingStreak"] >= streak


async def test_failing_container_is_restarted_by_event_once_streak_reaches_3(
        engine: TestEngine, kit: Kit, service: WatchdogService) -> None:
    run_flip(engine, "web")
    engine.wait_health("web", "healthy", timeout_s=10)
    started = state(engine, "web")["StartedAt"]
    failing_since = time.time()
    set_ok(engine, "web", ok=False)  # unhealthy after 1 failure (retries 1): event, streak 1

    await until(lambda: kit.restarts("web"), 15, "web restarted")

    [record] = kit.restarts("web")
    assert record.result == "ok" and record.trigger == "watchdog"
    assert record.failing_streak >= 3
    assert 2.0 <= record.at - failing_since <= 6.0  # third failure at ~3 s; restart follows
    assert state(engine, "web")["StartedAt"] != started
    engine.wait_health("web", "healthy", timeout_s=10)  # the restart re-created /ok
    await asyncio.sleep(2)
    assert len(kit.restarts("web")) == 1
    [alert] = kit.alerts("watchdog.restart_ok")
    assert alert.subject == "web" and alert.level == "WARN"
    [audited] = kit.audit("watchdog.restart")
    assert audited["VMAGENT_CONTAINER"] == "web" and audited["VMAGENT_RESULT"] == "ok"
    assert any("FailingStreak 1 < 3" in e["MESSAGE"] for e in kit.audit("watchdog.skip"))


async def test_fails_twice_then_recovers_is_never_restarted(
        engine: TestEngine, kit: Kit, service: WatchdogService) -> None:
    run_flip(engine, "web")
    engine.wait_health("web", "healthy", timeout_s=10)
    started = state(engine, "web")["StartedAt"]
    set_ok(engine, "web", ok=False)
    await until(lambda: unhealthy_with_streak(engine, "web", 2), 10, "two failures")
    set_ok(engine, "web", ok=True)
    engine.wait_health("web", "healthy", timeout_s=5)
    await asyncio.sleep(2.5)  # past the recheck the skip scheduled
    assert kit.restarts("web") == []
    assert state(engine, "web")["StartedAt"] == started
    assert service.passes >= 2  # the event pass and the recheck ran


async def test_never_restarted_without_check_stopped_opted_out_or_protected(
        engine: TestEngine, kit: Kit) -> None:
    engine.run_plain("plain")
    run_flip(engine, "stopped", healthy_at_start=False)
    run_flip(engine, "opted-out", healthy_at_start=False, labels={"vm-agent.watchdog": "off"})
    run_flip(engine, "keep-me", healthy_at_start=False)
    for name in ("stopped", "opted-out", "keep-me"):
        await until(lambda n=name: unhealthy_with_streak(engine, n, 3), 10, f"{name} streak 3")
    engine.client().api.stop("stopped", timeout=1)

    report = await watchdog_pass(kit.deps, dry_run=False)

    assert not [a for a in report.actions if isinstance(a, Restart)]
    reasons = {a.container: a.reason for a in report.actions if isinstance(a, Skip)}
    assert reasons == {"opted-out": "opted out (label vm-agent.watchdog=off)",
                       "keep-me": "protected (watchdog.protected)"}
    assert {e["VMAGENT_CONTAINER"] for e in kit.audit("watchdog.skip")} == set(reasons)
    assert kit.restarts("opted-out") == kit.restarts("keep-me") == []


async def test_crash_loop_trips_the_breaker_after_the_budget(
        engine: TestEngine, kit: Kit, service: WatchdogService) -> None:
    kit.deps.config = replace(kit.deps.config, failures_before_restart=1)  # faster loop
    run_flip(engine, "loop", healthy_at_start=False)  # unhealthy again after every restart

    await until(lambda: kit.alerts("watchdog.gave_up"), 25, "breaker tripped")
    await asyncio.sleep(2)  # more failures, more passes: no restart, no second alert
    await watchdog_pass(kit.deps, dry_run=False)

    assert [r.result for r in kit.restarts("loop")] == ["ok", "ok"]  # max_restarts 2
    [alert] = kit.alerts("watchdog.gave_up")
    assert alert.level == "CRIT" and "restart loop, giving up" in alert.text
    report = await watchdog_pass(kit.deps, dry_run=True)
    [skip] = report.actions
    assert isinstance(skip, Skip) and skip.reason.startswith("gave up")
    with pytest.raises(RateLimited) as refused:
        await restart_one(kit.deps, "loop")
    assert refused.value.details["retry_after_s"] > 3500


async def test_container_removed_mid_pass_is_skipped_cleanly(engine: TestEngine,
                                                             kit: Kit) -> None:
    class RemovesFirst(Inventory):
        async def restart(self, container_id: str, **kw: Any) -> None:
            if container_id == doomed.id:
                await asyncio.to_thread(engine.client().api.remove_container, container_id,
                                        force=True)
            await super().restart(container_id, **kw)

    doomed = run_flip(engine, "doomed", healthy_at_start=False)
    run_flip(engine, "other", healthy_at_start=False)
    for name in ("doomed", "other"):
        await until(lambda n=name: unhealthy_with_streak(engine, n, 3), 10, f"{name} streak 3")
    kit.deps.inventory = RemovesFirst(kit.docker)

    report = await watchdog_pass(kit.deps, dry_run=False)

    results = {r.container: r.result for r in report.results}
    assert results == {"doomed": "vanished", "other": "restarted"}
    assert report.status == "ok"
    assert [r.result for r in kit.restarts("doomed")] == ["vanished"]
    assert kit.alerts("watchdog.restart_ok")[0].subject == "other"


async def test_recreated_container_starts_with_a_clean_history(engine: TestEngine,
                                                               kit: Kit) -> None:
    kit.deps.config = replace(kit.deps.config, max_restarts=1, failures_before_restart=1)
    first = run_flip(engine, "web", healthy_at_start=False)
    await until(lambda: unhealthy_with_streak(engine, "web", 1), 10, "unhealthy")
    assert [type(a) for a in (await watchdog_pass(kit.deps, dry_run=False)).actions] == [Restart]
    await asyncio.sleep(1.2)  # past its grace (0 + 1 s x 1)
    await until(lambda: unhealthy_with_streak(engine, "web", 1), 10, "unhealthy again")
    assert [type(a) for a in (await watchdog_pass(kit.deps, dry_run=False)).actions] == [GiveUp]

    first.remove(force=True)
    second = run_flip(engine, "web", healthy_at_start=False)  # compose recreate: new id
    await until(lambda: unhealthy_with_streak(engine, "web", 1), 10, "new web unhealthy")
    report = await watchdog_pass(kit.deps, dry_run=False)

    assert [(type(a), a.container_id) for a in report.actions] == [(Restart, second.id)]


async def test_engine_restart_leaves_the_watchdog_working(
        engine: TestEngine, kit: Kit, service: WatchdogService) -> None:
    assert service.events is not None
    connects = service.events.connects
    await asyncio.to_thread(engine.restart)
    await until(lambda: service.events and service.events.connects > connects, 20,
                "event stream reconnected")
    run_flip(engine, "after")
    engine.wait_health("after", "healthy", timeout_s=10)
    set_ok(engine, "after", ok=False)
    await until(lambda: kit.restarts("after"), 15, "restarted after the engine restart")
    assert kit.restarts("after")[0].result == "ok"


async def test_oom_kill_is_recorded_and_alerted(engine: TestEngine, kit: Kit,
                                               service: WatchdogService) -> None:
    engine.run("hog", command=["sh", "-c", "sleep 1; x=$(head -c 64000000 /dev/zero | tr "
                                            "'\\0' a); sleep 30"],
               mem_limit="16m", memswap_limit="16m")
    await until(lambda: kit.deps.history.ooms(), 20, "oom recorded")
    ooms = kit.deps.history.ooms()  # one per process the kernel killed (sh, head or tr)
    assert ooms and {oom["container"] for oom in ooms} == {"hog"}
    await until(lambda: kit.alerts("container.oom"), 5, "oom alerted")


async def test_cached_inspects_are_dropped_on_container_events(
        engine: TestEngine, kit: Kit, service: WatchdogService) -> None:
    engine.run_plain("plain")
    [before] = await kit.deps.inventory.containers()
    assert kit.deps.inventory.cache.enabled
    engine.client().api.restart("plain", timeout=1)

    async def started_again() -> bool:
        [now] = await kit.deps.inventory.containers()
        return now.started_at is not None and before.started_at is not None and \
            now.started_at > before.started_at

    deadline = time.monotonic() + 3  # the cache itself would keep the old answer for 60 s
    while not await started_again():
        assert time.monotonic() < deadline, "list still shows the old StartedAt"
        await asyncio.sleep(0.1)
