"""Disk usage (statvfs, as df computes it) and /proc/loadavg."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.host import disk
from agent.host.disk import DiskReader, disk_usage, read_disks, used_percent
from agent.host.loadavg import parse_loadavg, read_loadavg
from agent.host.model import DiskSample, HostReadError


@pytest.mark.parametrize(("used", "free", "expected"), [
    (50, 50, 50.0),
    (1, 2, 33.34),           # 33.333... rounded up to 0.01
    (2, 1, 66.67),
    (0, 100, 0.0),
    (100, 0, 100.0),
    (0, 0, 0.0),             # pseudo file systems: no blocks at all
])
def test_used_percent_rounds_up_to_a_hundredth(used: int, free: int, expected: float) -> None:
    assert used_percent(used, free) == expected


def df_p(mount: str) -> tuple[int, int, int]:
    """(used KiB, available KiB, Use%) from ``df -P`` (POSIX format, 1024-blocks)."""
    out = subprocess.run(["df", "-P", mount], capture_output=True, text=True, check=True)
    fields = out.stdout.splitlines()[1].split()
    return int(fields[2]), int(fields[3]), int(fields[4].rstrip("%"))


def stable_df_and_statvfs(mount: str) -> tuple[tuple[int, int, int], DiskSample]:
    """df, statvfs, df again until both df runs agree (the disk may be written meanwhile)."""
    for _ in range(20):
        before = df_p(mount)
        sample = disk_usage(mount)
        if df_p(mount) == before:
            return before, sample
    pytest.fail(f"{mount} kept changing under df")


@pytest.mark.parametrize("mount", ["/", "tmp_path"])
def test_disk_usage_matches_df(mount: str, tmp_path: Path) -> None:
    path = str(tmp_path) if mount == "tmp_path" else mount
    (used_k, avail_k, df_percent), sample = stable_df_and_statvfs(path)
    assert sample.used_bytes // 1024 == used_k
    assert sample.free_bytes // 1024 == avail_k
    assert math.ceil(sample.used_percent) == df_percent
    assert sample.total_bytes >= sample.used_bytes + sample.free_bytes


def test_read_disks_skips_a_missing_mount_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = str(tmp_path / "not-mounted")
    with caplog.at_level(logging.WARNING, logger="agent.host.disk"):
        samples = read_disks(["/", missing])
    assert [s.mount for s in samples] == ["/"]
    assert missing in caplog.text


async def test_disk_reader_reports_missing_mounts_as_unsampled(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone")
    samples, unsampled = await DiskReader(2.0).read(["/", missing])
    assert [s.mount for s in samples] == ["/"]
    assert unsampled == (missing,)


@dataclass
class HungStatvfs:
    release: threading.Event = field(default_factory=threading.Event)
    calls: list[str] = field(default_factory=list)


@pytest.fixture
def hung_statvfs(monkeypatch: pytest.MonkeyPatch) -> Iterator[HungStatvfs]:
    """disk_usage("/hung") blocks (as statvfs on a dead NFS server) until released."""
    hung = HungStatvfs()
    real = disk.disk_usage

    def blocking(mount: str) -> DiskSample:
        hung.calls.append(mount)
        if mount == "/hung":
            hung.release.wait(10)
            raise OSError("nfs server not responding")
        return real(mount)

    monkeypatch.setattr(disk, "disk_usage", blocking)
    yield hung
    hung.release.set()


async def test_a_hung_mount_times_out_and_is_not_retried_while_hung(
        hung_statvfs: HungStatvfs, caplog: pytest.LogCaptureFixture) -> None:
    reader = DiskReader(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    samples, unsampled = await reader.read(["/", "/hung"])
    assert loop.time() - started < 1.0
    assert ([s.mount for s in samples], unsampled) == (["/"], ("/hung",))
    await reader.read(["/", "/hung"])            # still hung: no second blocked thread
    assert hung_statvfs.calls.count("/hung") == 1
    hung_statvfs.release.set()
    await asyncio.sleep(0.1)
    _, unsampled = await reader.read(["/hung"])  # it returned: tried again (and fails)
    assert hung_statvfs.calls.count("/hung") == 2
    assert unsampled == ("/hung",)
    assert "timed out" in caplog.text and "still blocked" in caplog.text


def test_parse_loadavg_and_per_core() -> None:
    load = parse_loadavg("3.00 2.50 1.25 3/412 98765\n", cores=4)
    assert (load.load1, load.load5, load.load15, load.load1_per_core) == (3.0, 2.5, 1.25, 0.75)


def test_zero_cores_counts_as_one() -> None:
    assert parse_loadavg("2.0 1.0 0.5 1/1 1", cores=0).load1_per_core == 2.0


@pytest.mark.parametrize("text", ["", "0.1 0.2", "a b c 1/1 1"])
def test_malformed_loadavg_raises(text: str) -> None:
    with pytest.raises(HostReadError):
        parse_loadavg(text, cores=1)


def test_read_loadavg_temp_tree_and_real(tmp_path: Path) -> None:
    (tmp_path / "loadavg").write_text("1.50 1.00 0.50 1/100 42\n")
    assert read_loadavg(2, tmp_path).load1_per_core == 0.75
    real = read_loadavg(os.cpu_count() or 1, "/proc")
    assert real.load1 >= 0 and real.load15 >= 0
