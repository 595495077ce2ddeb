"""``GET /v1/io`` over the real socket, fed by real containers of the tests' own dockerd.

The writer container runs busybox ``dd ... oflag=direct`` in a loop: direct
IO goes straight to the block layer from the container's own task, so it is
charged to the container's cgroup on both cgroup versions (buffered writes
are flushed later by the kernel's writeback, which cgroup v1 charges to the
root cgroup).  The file is in the container's root filesystem, i.e. on the
engine's storage under /tmp, on a real disk.

cgroup v1 on Linux >= 6.10 (this test VM: 6.18, v1 blkio) keeps the
``blkio.throttle.*`` counters at 0 until some throttle limit has been set on
the device (kernel commit a3166c51702b).  The writer is therefore started
with ``--device-write-bps <disk>:1TB``, a limit it can never reach, which
activates the accounting.  On cgroup v2 the limit is harmless and ``io.stat``
counts regardless.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from agent import cli
from agent.config import IoConfig
from agent.containers.engine import DockerEngine
from agent.containers.iorate import DockerLister, IoSampler
from agent.notify.events import AlertEvent
from tests.integration.dockerd import TestEngine
from tests.protocol.conftest import request, start_agent

pytestmark = pytest.mark.integration

#: dd 2 MiB with O_DIRECT every half second: about 4 MB/s, ~350 GB/day projected.
WRITER = ["sh", "-c", "trap 'exit 0' TERM; while :; do "
          "dd if=/dev/zero of=/f bs=1M count=2 oflag=direct 2>/dev/null; sleep 0.5; done"]
NEVER_REACHED_BPS = 10**12


def backing_disk(path: Path) -> str:
    """``/dev/<disk>`` holding ``path`` (the whole disk when it is on a partition)."""
    dev = os.stat(path).st_dev
    sysfs = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    assert sysfs.exists(), f"{path} is not on a block device ({os.major(dev)}:{os.minor(dev)})"
    sysfs = sysfs.resolve()
    if (sysfs / "partition").exists():
        sysfs = sysfs.parent
    uevent = dict(line.split("=", 1) for line in (sysfs / "uevent").read_text().split())
    return f"/dev/{uevent['DEVNAME']}"


async def rows_when(agent: Any, ready: Any, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Poll ``GET /v1/io`` until ``ready(rows)``; the last rows on timeout (test fails)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, env = await request(agent, "GET", "/v1/io")
        assert status == 200, env
        rows: list[dict[str, Any]] = env["data"]
        if ready(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.25)


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows}


async def test_a_writing_container_shows_a_write_rate_and_an_idle_one_none(
        engine: TestEngine, capsys: pytest.CaptureFixture[str]) -> None:
    assert engine.base is not None
    disk = backing_disk(engine.base / "docker")
    engine.run("io-writer", command=WRITER,
               device_write_bps=[{"Path": disk, "Rate": NEVER_REACHED_BPS}])
    engine.run_plain("io-idle")
    tmp = Path(tempfile.mkdtemp(prefix="vmio-", dir="/tmp"))
    agent, runner, stopper = await start_agent(tmp)
    events: list[AlertEvent] = []

    async def emit(event: AlertEvent) -> None:
        events.append(event)

    docker = DockerEngine(engine.host, 10)
    io = IoSampler(IoConfig(), DockerLister(docker), interval_s=1, emit=emit)
    runner.state.services.io = io
    await io.start()
    try:
        rows = await rows_when(agent, lambda rs: len(rs) == 2 and rs[0]["write_bytes_per_s"] > 0)
        writer, idle = by_name(rows)["io-writer"], by_name(rows)["io-idle"]
        assert rows[0]["name"] == "io-writer", rows  # worst first
        assert 0.5e6 < writer["write_bytes_per_s"] < 200e6, writer
        assert writer["projected_bytes_per_day"] == pytest.approx(
            writer["write_bytes_per_s"] * 86400, rel=1e-3)
        assert writer["level"] == "CRIT"
        assert idle["write_bytes_per_s"] < 10e3 and idle["level"] == "OK", idle
        assert [(e.kind, e.subject, e.level) for e in events] == [
            ("io.write_rate", "io-writer", "CRIT")]
        status = await asyncio.to_thread(cli.main, ["--socket", agent.socket_path, "io"])
        out = capsys.readouterr().out
        assert status == 2 and out.splitlines()[1].startswith("io-writer"), out  # CRIT -> 2
        assert "/s" in out and "/day" in out and "CRIT" in out

        # a restart starts a new cgroup whose counter begins at 0: never a negative rate
        await asyncio.to_thread(engine.client().containers.get("io-writer").restart, timeout=2)
        seen: list[float] = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            seen += [r["write_bytes_per_s"] for r in await rows_when(agent, lambda rs: True)]
            await asyncio.sleep(0.5)
        assert min(seen) >= 0
        rows = await rows_when(agent, lambda rs: "io-writer" in by_name(rs))
        assert by_name(rows)["io-writer"]["write_bytes_per_s"] > 0.5e6, rows
    finally:
        await io.stop()
        await stopper.stop()
        await docker.aclose()
        shutil.rmtree(tmp, ignore_errors=True)
