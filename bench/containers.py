"""Issue 3 speed check: one watchdog pass and one container list over N containers.

``python -m bench.containers [--containers 40] [--unhealthy 5] [--rounds 30]``
starts the tests' own Docker engine (tests/integration/dockerd.py: private
dockerd, busybox image FROM scratch, network none), runs N containers with
a HEALTHCHECK every second of which U fail (opted out by label so the pass
decides but never restarts them), then times, in the same process:

- ``Inventory.containers()`` (what ``GET /v1/containers`` does), once inspecting
  every container and once with the event stream followed (InspectCache),
- ``watchdog_pass(dry_run=False)`` (list unhealthy + inspects + decide + audit),
- ``docker ps --filter health=unhealthy`` (the CLI, for comparison),

and prints p50/p95 in milliseconds.  Needs root, dockerd and containerd.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.audit import Auditor
from agent.config import WatchdogConfig
from agent.containers.engine import DockerEngine
from agent.containers.events import WatchdogService
from agent.containers.history import WatchdogHistory
from agent.containers.inventory import Inventory
from agent.containers.watchdog_run import WatchdogDeps, watchdog_pass
from agent.hold import HoldStore
from agent.journal import JournalWriter
from agent.notify.events import AlertLog
from agent.store import Store
from tests.integration.dockerd import TestEngine
from tests.integration.watchdog_kit import run_flip, wait_for


def _percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   (n={len(ms)})"


async def _time(fn: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


def _setup(engine: TestEngine, total: int, unhealthy: int) -> None:
    for i in range(total):
        bad = i < unhealthy
        run_flip(engine, f"c{i:02d}", healthy_at_start=not bad,
                 labels={"vm-agent.watchdog": "off"} if bad else None)
    wait_for(lambda: len(engine.client().api.containers(filters={"health": "unhealthy"}))
             == unhealthy, 60, "unhealthy containers")


async def _bench(engine: TestEngine, state: Path, rounds: int) -> None:
    docker = DockerEngine(engine.host, timeout_s=10)
    store = Store(state)
    auditor = Auditor(JournalWriter(socket_path=str(state / "none.sock"), stream=io.StringIO()))
    deps = WatchdogDeps(inventory=Inventory(docker), history=WatchdogHistory(store),
                        alerts=AlertLog(store, auditor), auditor=auditor,
                        hold=HoldStore(state), config=WatchdogConfig())
    await deps.inventory.containers()  # warm: client, image cache
    cold = await _time(deps.inventory.containers, rounds)
    service = WatchdogService(deps, host=engine.host, follow_events=True,
                              backstop_interval_s=3600, first_pass_delay_s=3600)
    await service.start()
    await asyncio.to_thread(wait_for, lambda: deps.inventory.cache.enabled, 10, "event stream")
    listing = await _time(deps.inventory.containers, rounds)
    passes = await _time(lambda: watchdog_pass(deps, dry_run=False), rounds)
    await service.stop()
    docker.close()
    print(f"GET /v1/containers, every container inspected: {_percentiles(cold)}")
    print(f"GET /v1/containers, event stream followed:     {_percentiles(listing)}")
    print(f"watchdog pass:                                 {_percentiles(passes)}")


def _docker_ps(engine: TestEngine, rounds: int) -> None:
    cli = shutil.which("docker")
    if cli is None:
        print("docker ps: no docker CLI installed")
        return
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run([cli, "-H", engine.host, "ps", "--filter", "health=unhealthy"],
                       check=True, capture_output=True)
        samples.append(time.perf_counter() - t0)
    print(f"docker ps --filter health=unhealthy:           {_percentiles(samples)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--containers", type=int, default=40)
    p.add_argument("--unhealthy", type=int, default=5)
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    with TestEngine() as engine, tempfile.TemporaryDirectory() as tmp:
        engine.build_test_image()
        _setup(engine, args.containers, args.unhealthy)
        print(f"{args.containers} running containers, {args.unhealthy} unhealthy "
              f"(storage driver {engine.storage_driver})")
        asyncio.run(_bench(engine, Path(tmp), args.rounds))
        _docker_ps(engine, args.rounds)


if __name__ == "__main__":
    main()
