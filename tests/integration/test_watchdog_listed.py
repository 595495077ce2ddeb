"""A pass decides opted-out and protected unhealthy containers on their list entry (no
inspect), never at the cost of a restart it owes or a breaker it must reset."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.containers.engine import DockerEngine
from agent.containers.inventory import Inventory
from agent.containers.watchdog import Restart, Resume, Skip
from agent.containers.watchdog_run import watchdog_pass
from tests.integration.dockerd import TestEngine
from tests.integration.watchdog_kit import Kit, run_flip, state, wait_for

pytestmark = pytest.mark.integration


class CountingEngine(DockerEngine):
    """The real engine client; remembers which refs were inspected."""

    def __init__(self, host: str) -> None:
        super().__init__(host, timeout_s=5)
        self.inspected: list[str] = []

    async def inspect_container(self, ref: str) -> dict[str, Any]:
        self.inspected.append(ref)
        return await super().inspect_container(ref)


@pytest.fixture
async def kit(engine: TestEngine, tmp_path: Path) -> AsyncIterator[Kit]:
    made = Kit(engine, tmp_path, protected=("keep-me",), failures_before_restart=1)
    counting = CountingEngine(engine.host)
    made.deps.inventory = Inventory(counting)
    yield made
    await counting.aclose()
    await made.aclose()


def unhealthy(engine: TestEngine, name: str) -> bool:
    return bool(state(engine, name)["Health"]["Status"] == "unhealthy")


async def sick_fleet(engine: TestEngine) -> dict[str, str]:
    """``opted-out``, ``keep-me`` (protected) and ``sick``, all unhealthy; name -> id."""
    ids = {}
    for name, labels in (("opted-out", {"vm-agent.watchdog": "off"}), ("keep-me", {}),
                         ("sick", {})):
        ids[name] = str(run_flip(engine, name, healthy_at_start=False, labels=labels).id)
    await asyncio.to_thread(wait_for, lambda: all(unhealthy(engine, n) for n in ids), 15,
                            "all three unhealthy")
    return ids


async def test_list_decides_opted_out_and_protected_and_the_sick_one_is_restarted(
        engine: TestEngine, kit: Kit) -> None:
    ids = await sick_fleet(engine)
    kit.deps.config = replace(kit.deps.config, window_s=3600)
    # past the grace period: start_period 0 + interval 1 s x retries 1
    await asyncio.sleep(1.2)

    report = await watchdog_pass(kit.deps, dry_run=False)

    engine_used = kit.deps.inventory.engine
    assert isinstance(engine_used, CountingEngine)
    assert engine_used.inspected == [ids["sick"]]  # the two skips needed no inspect
    assert report.examined == 3
    kinds = {a.container: (type(a), a.reason) for a in report.actions}
    assert kinds["opted-out"] == (Skip, "opted out (label vm-agent.watchdog=off)")
    assert kinds["keep-me"] == (Skip, "protected (watchdog.protected)")
    assert kinds["sick"][0] is Restart
    assert [r.result for r in report.results if r.container == "sick"] == ["restarted"]
    assert {e["VMAGENT_CONTAINER"] for e in kit.audit("watchdog.skip")} == {"opted-out",
                                                                             "keep-me"}


async def test_a_tripped_opted_out_container_is_still_inspected_and_resumed(
        engine: TestEngine, kit: Kit) -> None:
    ids = await sick_fleet(engine)
    # the breaker tripped an hour ago, before the container's start, RestartCount 0:
    # an operator restarted it since, which only its inspect (StartedAt) can tell
    await asyncio.to_thread(kit.deps.history.trip, ids["opted-out"], "opted-out",
                            at=time.time() - 3600, restart_count=0)

    report = await watchdog_pass(kit.deps, dry_run=False)

    engine_used = kit.deps.inventory.engine
    assert isinstance(engine_used, CountingEngine)
    assert ids["opted-out"] in engine_used.inspected
    assert ids["keep-me"] not in engine_used.inspected
    [resume] = [a for a in report.actions if a.container == "opted-out"]
    assert isinstance(resume, Resume) and resume.reason == "restarted by an operator"
    assert await asyncio.to_thread(kit.deps.history.tripped_ids) == []
