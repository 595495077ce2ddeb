"""Odd inputs real machines produce, against the host sampler (issue 2, breaking session).

Each test below named in the report failed before its fix in agent/host/; the
others pin behaviour the attack found correct (they fail if it regresses).
"""

# The fixture samplers is test_sampler's, imported: its parameters "redefine" it.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import SamplingConfig, ThresholdsConfig
from agent.errors import UpstreamUnavailable
from agent.host import disk
from agent.host.disk import DiskReader, disk_usage
from agent.host.loadavg import parse_loadavg
from agent.host.meminfo import memory_sample, parse_meminfo
from agent.host.model import DiskSample, DockerSummary, HostReadError
from agent.host.procstat import CpuTimes, cpu_sample, cpu_shares, parse_stat, read_stat
from agent.host.sampler import HostSampler
from tests.unit.test_sampler import samplers  # noqa: F401  (a fixture)

SLACK_S = 0.2
REPO = Path(__file__).resolve().parents[2]
MEMINFO = """\
MemTotal:       16384000 kB
MemFree:         2000000 kB
MemAvailable:    9000000 kB
SwapCached:            0 kB
SwapTotal:             0 kB
SwapFree:              0 kB
"""


def stat_text(*cpus: tuple[int, int, int, int]) -> str:
    """``/proc/stat`` with one ``cpuN`` line per (user, idle, iowait, steal) and their sum."""
    total = [sum(c[i] for c in cpus) for i in range(4)]

    def line(name: str, v: list[int] | tuple[int, int, int, int]) -> str:
        return f"{name} {v[0]} 0 0 {v[1]} {v[2]} 0 0 {v[3]} 0 0\n"
    return line("cpu ", total) + "".join(line(f"cpu{i}", c) for i, c in enumerate(cpus))


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text(stat_text((100, 900, 0, 0), (100, 900, 0, 0)))
    (root / "meminfo").write_text(MEMINFO)
    (root / "loadavg").write_text("0.50 0.40 0.30 1/100 42\n")
    return root


async def healthy() -> DockerSummary:
    return DockerSummary(available=True)




def strict_json(text: str) -> object:
    """json.loads that refuses NaN/Infinity (RFC 8259 has neither)."""
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


# -- /proc/loadavg: NaN / Infinity must never reach the wire ------------------------------

@pytest.mark.parametrize("text", ["nan 0.1 0.1 1/1 1", "0.1 inf 0.1 1/1 1",
                                  "1e400 0.1 0.1 1/1 1", "-1.00 0.1 0.1 1/1 1"])
def test_loadavg_that_is_not_a_finite_non_negative_number_is_refused(text: str) -> None:
    with pytest.raises(HostReadError):
        parse_loadavg(text, cores=2)


async def test_health_json_never_carries_nan(proc: Path, samplers: list[HostSampler]) -> None:
    (proc / "loadavg").write_text("nan nan nan 1/1 1\n")
    sampler = HostSampler(SamplingConfig(cpu_window_s=0.1, disks=("/",), proc_root=str(proc)),
                          ThresholdsConfig(), healthy)
    samplers.append(sampler)
    await sampler.start()
    with pytest.raises(UpstreamUnavailable, match="loadavg"):   # no sample, not NaN
        strict_json((await sampler.latest()).wire_json)


def test_a_huge_runnable_count_is_ignored() -> None:
    load = parse_loadavg("12.00 8.00 4.00 4194303/4194304 4194304\n", cores=4)
    assert (load.load1, load.load1_per_core) == (12.0, 3.0)


# -- bytes that are not UTF-8 / digits that are not ASCII ---------------------------------

def test_a_non_utf8_byte_in_proc_stat_does_not_escape_as_unicode_error(tmp_path: Path) -> None:
    (tmp_path / "stat").write_bytes(b"cpu  10 0 0 90 0 0 0 0 0 0\ncpu0 10 0 0 90\nintr \xff\xfe\n")
    assert read_stat(tmp_path).times.idle == 90
    (tmp_path / "stat").write_bytes(b"cpu  1\xff 0 0 90\n")
    with pytest.raises(HostReadError):
        read_stat(tmp_path)


async def test_start_survives_a_garbled_proc_stat(proc: Path,
                                                  samplers: list[HostSampler]) -> None:
    (proc / "stat").write_bytes(b"\xff\xfe garbage\n")
    sampler = HostSampler(SamplingConfig(cpu_window_s=0.1, proc_root=str(proc)),
                          ThresholdsConfig(), healthy)
    samplers.append(sampler)
    await sampler.start()                               # raised UnicodeDecodeError
    with pytest.raises(UpstreamUnavailable, match="stat"):
        await sampler.latest()


def test_a_non_ascii_digit_in_meminfo_is_skipped_not_a_value_error() -> None:
    assert parse_meminfo("MemTotal: \u00b2 kB\nMemFree: 1 kB\n") == {"MemFree": 1024}


# -- /proc/stat shapes ---------------------------------------------------------------------

def test_newer_kernel_with_more_columns_reads_the_known_ten() -> None:
    snap = parse_stat("cpu  1 2 3 4 5 6 7 8 9 10 11 12\ncpu0 1 2 3 4 5 6 7 8 9 10 11 12\n")
    assert snap.times == CpuTimes(1, 2, 3, 4, 5, 6, 7, 8, 9, 10) and snap.cores == 1


def test_a_cpu_going_offline_between_samples() -> None:
    prev = parse_stat(stat_text((100, 900, 0, 0), (100, 900, 0, 0)))
    cur = parse_stat(stat_text((150, 1300, 20, 30)))    # cpu1 gone, its counters too
    sample = cpu_sample(prev, cur, 1.0)
    assert sample.cores == 1
    assert 0.0 <= sample.steal_percent <= 100.0 and 0.0 <= sample.iowait_percent <= 100.0


@pytest.mark.parametrize("cur", [CpuTimes(), CpuTimes(user=1, steal=2**64 - 1),
                                 CpuTimes(user=10, idle=0, steal=10, iowait=10)])
def test_any_pair_of_reads_gives_0_to_100(cur: CpuTimes) -> None:
    prev = CpuTimes(user=2**63, idle=2**40, iowait=5, steal=7)     # wrap, migration, ...
    for a, b in ((prev, cur), (cur, prev), (cur, cur)):
        steal, iowait = cpu_shares(a, b)
        assert 0.0 <= steal <= 100.0 and 0.0 <= iowait <= 100.0


# -- /proc/meminfo -------------------------------------------------------------------------

def test_no_swap_and_huge_values() -> None:
    huge = MEMINFO.replace("16384000 kB", "18014398509481983 kB")     # 2**54 - 1 KiB
    sample = memory_sample(parse_meminfo(huge))
    assert sample.total_bytes == (2**54 - 1) * 1024
    assert (sample.swap_total_bytes, sample.swap_used_bytes, sample.swap_cached_bytes) == (0, 0, 0)
    strict_json(json.dumps(sample.__dict__))


# -- statvfs: negative "available" (NFS over its reservation) ------------------------------

def fake_statvfs(monkeypatch: pytest.MonkeyPatch, mount: str,
                 blocks: int, bfree: int, bavail: int) -> None:
    """os.statvfs(mount) answers these block counts (4 KiB blocks); other paths are real.

    On 64-bit Linux CPython converts f_bavail with ``(long)``, so a file system's
    negative available count arrives as a negative int (the 2**64 - n form is
    what an unsigned conversion gives; both are tested).
    """
    real = os.statvfs

    def statvfs(path: str) -> os.statvfs_result:
        if path == mount:
            return os.statvfs_result((4096, 4096, blocks, bfree, bavail, 0, 0, 0, 0, 255))
        return real(path)
    monkeypatch.setattr(os, "statvfs", statvfs)


@pytest.mark.parametrize("bavail", [-50, -900, -2000, 2**64 - 50])
def test_negative_available_is_a_full_disk_not_0_percent(
        monkeypatch: pytest.MonkeyPatch, bavail: int) -> None:
    fake_statvfs(monkeypatch, "/nfs", blocks=1000, bfree=100, bavail=bavail)
    sample = disk_usage("/nfs")
    assert sample.free_bytes == 0
    assert sample.used_bytes == 900 * 4096
    assert sample.used_percent == 100.0


def test_free_above_total_is_not_negative_used(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_statvfs(monkeypatch, "/fuse", blocks=100, bfree=150, bavail=150)
    sample = disk_usage("/fuse")
    assert sample.used_bytes == 0 and sample.used_percent == 0.0


def test_the_same_mount_listed_twice_is_sampled_once() -> None:
    samples, unsampled = asyncio.run(DiskReader(2.0).read(["/", "/", "/"]))
    assert [s.mount for s in samples] == ["/"] and unsampled == ()


def test_mount_names_with_spaces_and_backslashes_are_used_as_given(tmp_path: Path) -> None:
    odd = tmp_path / "a b\tc\\d"                          # what \040 \011 \134 decode to
    odd.mkdir()
    samples, _ = asyncio.run(DiskReader(2.0).read([str(odd)]))
    assert samples[0].mount == str(odd)
    assert json.loads(json.dumps([s.__dict__ for s in samples]))[0]["mount"] == str(odd)


# -- a statvfs that hangs -------------------------------------------------------------------

@pytest.fixture
def hung(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """disk_usage on a path under /hung blocks (dead NFS server) until the event is set."""
    release = threading.Event()
    real = disk.disk_usage

    def blocking(mount: str) -> DiskSample:
        if mount.startswith("/hung"):
            release.wait(20)
            raise OSError("nfs server not responding")
        return real(mount)
    monkeypatch.setattr(disk, "disk_usage", blocking)
    yield release
    release.set()


async def test_hung_mounts_do_not_starve_the_default_executor(hung: threading.Event) -> None:
    readers = [DiskReader(0.1) for _ in range(3)]       # the sampler, the job runner, ...
    mounts = [f"/hung{i}" for i in range(4)]
    for reader in readers:
        _, unsampled = await reader.read(mounts)
        assert len(unsampled) == 4
    # 12 blocked calls; the default executor has min(32, cores + 4) workers.
    async with asyncio.timeout(2):
        assert await asyncio.to_thread(int, "7") == 7


CHILD = """\
import asyncio, threading, sys
from agent.host import disk
release = threading.Event()
def blocking(mount):
    release.wait(8)
    raise OSError("nfs server not responding")
disk.disk_usage = blocking
print(asyncio.run(disk.DiskReader(0.2).read(["/hung"])), flush=True)
"""


def test_a_hung_statvfs_does_not_keep_the_process_from_exiting() -> None:
    # asyncio.run() joins the default executor's threads; a daemon's SIGTERM then hung
    # until the statvfs returned (systemd kills it after TimeoutStopSec: a failed stop).
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD)], cwd=REPO,
                          capture_output=True, text=True, timeout=30, check=True)
    assert "'/hung'" in done.stdout
    assert time.monotonic() - started < 4.0

