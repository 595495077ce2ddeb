"""A path_retention step that times out or is cancelled deletes nothing more.

The deletion runs in a worker thread, which a timeout cannot stop; without a
stop signal it went on deleting after the run record said "timed out" and the
job's lock was released (a next run could overlap it).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

from agent.config import CleanupConfig, CleanupModes, PathRetentionRule
from agent.jobs import cleanup_files as cf
from agent.jobs import cleanup_steps as host

FILES = 20000


def old_tree(root: Path, count: int) -> None:
    stamp = time.time() - 30 * 86400
    for i in range(count):
        sub = root / f"d{i % 50:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{i}.log"
        path.touch()
        os.utime(path, (stamp, stamp))


def remaining(root: Path) -> int:
    return sum(len(names) for _dir, _dirs, names in os.walk(root))


async def test_a_timed_out_deletion_stops_deleting(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    await asyncio.to_thread(old_tree, root, FILES)
    cfg = CleanupConfig(modes=CleanupModes(standard=("path_retention",)),
                        path_retention=(PathRetentionRule(root=str(root), globs=("*.log",),
                                                          days=7),))
    step = await host.plan_paths(cfg, "path_retention", now=time.time())
    assert step.detail.startswith(f"{FILES} files")
    try:
        async with asyncio.timeout(0.02):  # as the runner bounds a step
            await host.run_paths(step)
    except TimeoutError:
        pass
    await asyncio.sleep(0.2)  # the thread's current unlink ends
    left = remaining(root)
    await asyncio.sleep(0.5)
    assert 0 < left == remaining(root), "files were deleted after the step timed out"


def test_delete_old_stops_at_the_signal(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    old_tree(root, 10)
    stop = threading.Event()
    stop.set()
    deleted, errors = cf.delete_old(str(root), ("*.log",), time.time(), stop=stop)
    assert (deleted, errors) == ([], [])
    assert remaining(root) == 10
    deleted, errors = cf.delete_old(str(root), ("*.log",), time.time())
    assert len(deleted) == 10 and remaining(root) == 0
