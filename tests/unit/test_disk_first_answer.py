"""A mount whose statvfs hangs (a dead NFS server) and the first answer after start.

Issue 2: the first answer never waits longer than one cpu window.  The disks
are read during the window; before the first answer a mount still being read
when the window ends is left out (WARN) and its call goes on; a call still
running is shared, never started twice.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.config import ThresholdsConfig
from agent.host.disk import DiskReader
from agent.host.sampler import HostSampler
from tests.unit.test_disk_load import HungStatvfs, hung_statvfs  # noqa: F401  (a fixture)
from tests.unit.test_sampler import HEALTHY, config, probe_returning, proc  # noqa: F401

WINDOW_S = 0.3


async def test_the_first_answer_waits_one_window_with_a_hung_mount(
        proc: Path, hung_statvfs: HungStatvfs) -> None:  # noqa: F811
    sampler = HostSampler(config(proc, window=WINDOW_S, disks=("/", "/hung")),
                          ThresholdsConfig(), probe_returning(HEALTHY), disk_timeout_s=2.0)
    t0 = time.monotonic()
    await sampler.start()
    try:
        sample = await sampler.latest()
        waited = time.monotonic() - t0
        assert waited < WINDOW_S + 0.25, waited  # was the window plus the 2 s disk timeout
        assert [d.mount for d in sample.disks] == ["/"]
        assert sample.levels["disk_used_percent:/hung"] == "WARN"
        fresh = await sampler.sample_now()  # not the first: waits the disk timeout
        assert [d.mount for d in fresh.disks] == ["/"]
        assert hung_statvfs.calls.count("/hung") == 1  # the same call, never a second
    finally:
        await sampler.stop()


async def test_concurrent_reads_share_one_call_per_mount(
        hung_statvfs: HungStatvfs) -> None:  # noqa: F811
    reader = DiskReader(0.5)
    results = await asyncio.gather(reader.read(["/hung"]), reader.read(["/hung"]),
                                   reader.read(["/", "/hung"], wait_s=0.05))
    assert [unsampled for _samples, unsampled in results] == [("/hung",)] * 3
    assert hung_statvfs.calls.count("/hung") == 1
    hung_statvfs.release.set()
    await asyncio.sleep(0.1)
    await reader.read(["/hung"])  # it returned: a new call
    assert hung_statvfs.calls.count("/hung") == 2
