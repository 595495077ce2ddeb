"""HostSampler against temp /proc trees rewritten between reads (and the real /proc)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.config import SamplingConfig, ThresholdsConfig
from agent.errors import Internal, UpstreamUnavailable
from agent.host.model import DockerSummary, HostSample
from agent.host.sampler import HostSampler

SLACK_S = 0.2  # scheduling slack on a loaded CI machine

MEMINFO = """\
MemTotal:       16384000 kB
MemFree:         2000000 kB
MemAvailable:    9000000 kB
SwapCached:            0 kB
SwapTotal:       4000000 kB
SwapFree:        4000000 kB
"""

HEALTHY = DockerSummary(available=True, containers_total=3, running=3)


def write_stat(proc: Path, *, user: int = 0, idle: int = 0, iowait: int = 0,
               steal: int = 0) -> None:
    line = f"{user} 0 0 {idle} {iowait} 0 0 {steal} 0 0"
    (proc / "stat").write_text(f"cpu  {line}\ncpu0 {line}\ncpu1 {line}\nctxt 1\n")


def write_loadavg(proc: Path, load1: float = 1.0) -> None:
    (proc / "loadavg").write_text(f"{load1:.2f} 0.50 0.25 1/100 42\n")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    write_stat(root, user=1000, idle=9000)
    (root / "meminfo").write_text(MEMINFO)
    write_loadavg(root)
    return root


def config(proc: Path | str, *, window: float = 0.3, interval: float = 30.0,
           disks: tuple[str, ...] = ("/",)) -> SamplingConfig:
    return SamplingConfig(interval_s=interval, cpu_window_s=window, disks=disks,
                          proc_root=str(proc))


def probe_returning(summary: DockerSummary, delay: float = 0.0,
                    calls: list[float] | None = None) -> Callable[[], Awaitable[DockerSummary]]:
    async def probe() -> DockerSummary:
        if calls is not None:
            calls.append(time.monotonic())
        await asyncio.sleep(delay)
        return summary
    return probe


@pytest.fixture
async def samplers() -> AsyncIterator[list[HostSampler]]:
    """Collects samplers a test makes and stops them all at teardown."""
    made: list[HostSampler] = []
    yield made
    for sampler in made:
        await sampler.stop()


async def started(made: list[HostSampler], sampling: SamplingConfig,
                  probe: Callable[[], Awaitable[DockerSummary]], **kwargs: float) -> HostSampler:
    sampler = HostSampler(sampling, ThresholdsConfig(), probe, **kwargs)
    made.append(sampler)
    await sampler.start()
    return sampler


async def timed_latest(sampler: HostSampler) -> tuple[HostSample, float]:
    t0 = time.monotonic()
    sample = await sampler.latest()
    return sample, time.monotonic() - t0


async def test_first_answer_within_one_window_from_both_reads(
        proc: Path, samplers: list[HostSampler]) -> None:
    sampler = await started(samplers, config(proc, window=0.5), probe_returning(HEALTHY))
    # The first read happened in start(); rewrite the file before the second read.
    write_stat(proc, user=1100, idle=9700, iowait=50, steal=150)
    sample, waited = await timed_latest(sampler)
    assert waited < 0.5 + SLACK_S
    # deltas: user 100 + idle 700 + iowait 50 + steal 150 = 1000
    assert (sample.cpu.steal_percent, sample.cpu.iowait_percent) == (15.0, 5.0)
    assert sample.cpu.cores == 2
    assert sample.levels["steal_percent"] == "WARN"
    assert sample.status == "WARN"
    assert 0.45 <= sample.cpu.window_s < 0.5 + SLACK_S
    again, waited = await timed_latest(sampler)
    assert again is sample and waited < 0.05


async def test_latest_does_not_wait_for_a_hanging_docker_probe(
        proc: Path, samplers: list[HostSampler]) -> None:
    hung = probe_returning(HEALTHY, delay=10.0)
    sampler = await started(samplers, config(proc, window=0.2), hung)
    sample, waited = await timed_latest(sampler)
    assert waited < 0.2 + SLACK_S
    assert sample.docker == DockerSummary(available=False, error="not sampled yet")
    assert sample.levels["docker_available"] == "WARN"
    assert sample.memory.available_bytes == 9000000 * 1024
    t0 = time.monotonic()
    await sampler.stop()
    assert time.monotonic() - t0 < 0.5


async def test_a_probe_done_within_the_window_is_in_the_first_sample(
        proc: Path, samplers: list[HostSampler]) -> None:
    summary = DockerSummary(available=True, containers_total=5, running=5, unhealthy=1,
                            unhealthy_names=("web",))
    sampler = await started(samplers, config(proc, window=0.2), probe_returning(summary, 0.05))
    sample = await sampler.latest()
    assert sample.docker == summary
    assert sample.levels["unhealthy_containers"] == "WARN"
    assert sample.levels["docker_available"] == "OK"


async def test_a_later_docker_result_is_merged_into_the_cache(
        proc: Path, samplers: list[HostSampler]) -> None:
    summary = DockerSummary(available=True, containers_total=9, running=9, unhealthy=6,
                            unhealthy_names=tuple("abcdef"))
    sampler = await started(samplers, config(proc, window=0.1), probe_returning(summary, 0.4))
    first = await sampler.latest()
    assert first.docker.error == "not sampled yet"
    await asyncio.sleep(0.4 + SLACK_S)
    merged = await sampler.latest()
    assert merged.docker == summary
    assert merged.levels["unhealthy_containers"] == "CRIT" and merged.status == "CRIT"
    assert "docker_available" in merged.levels and merged.levels["docker_available"] == "OK"
    assert merged.sampled_at == first.sampled_at and merged.cpu == first.cpu


async def test_a_failing_probe_gives_available_false_with_the_error(
        proc: Path, samplers: list[HostSampler]) -> None:
    async def broken() -> DockerSummary:
        raise ConnectionRefusedError("docker.sock: connection refused")
    sampler = await started(samplers, config(proc, window=0.1), broken)
    await asyncio.sleep(0.05)
    sample = await sampler.latest()
    assert sample.docker == DockerSummary(available=False,
                                          error="docker.sock: connection refused")


async def test_a_probe_over_its_timeout_is_reported(
        proc: Path, samplers: list[HostSampler]) -> None:
    sampler = await started(samplers, config(proc, window=0.1),
                            probe_returning(HEALTHY, delay=10.0), docker_timeout_s=0.2)
    await asyncio.sleep(0.2 + SLACK_S)
    docker = (await sampler.latest()).docker
    assert docker.available is False
    assert docker.error == "docker probe timed out after 0.2 s"


async def test_the_loop_survives_a_missing_file(
        proc: Path, samplers: list[HostSampler]) -> None:
    (proc / "meminfo").unlink()
    sampler = await started(samplers, config(proc, window=0.05, interval=0.3),
                            probe_returning(HEALTHY))
    with pytest.raises(UpstreamUnavailable, match="meminfo"):
        await sampler.latest()
    (proc / "meminfo").write_text(MEMINFO)
    await asyncio.sleep(0.3 + SLACK_S)
    good = await sampler.latest()
    assert good.load.load1 == 1.0
    (proc / "loadavg").unlink()
    await asyncio.sleep(0.3 + SLACK_S)
    assert await sampler.latest() is good          # the cache keeps the last good sample
    write_loadavg(proc, load1=7.0)
    await asyncio.sleep(0.3 + SLACK_S)
    assert (await sampler.latest()).load.load1 == 7.0
    assert sampler.last_error is None


async def test_sample_now_takes_a_fresh_window_and_probe(
        proc: Path, samplers: list[HostSampler]) -> None:
    calls: list[float] = []
    sampler = await started(samplers, config(proc, window=0.3),
                            probe_returning(HEALTHY, calls=calls))
    first = await sampler.latest()
    assert first.cpu.steal_percent == 0.0
    fresh = asyncio.create_task(sampler.sample_now())
    await asyncio.sleep(0.1)                       # inside sample_now's window
    write_stat(proc, user=1100, idle=9500, steal=400)
    sample = await fresh
    assert sample.cpu.steal_percent == 40.0
    assert len(calls) == 2                         # the loop's probe and sample_now's
    assert await sampler.latest() is sample


async def test_sample_now_raises_on_a_broken_source(
        proc: Path, samplers: list[HostSampler]) -> None:
    sampler = await started(samplers, config(proc, window=0.05), probe_returning(HEALTHY))
    (proc / "stat").unlink()
    with pytest.raises(FileNotFoundError):
        await sampler.sample_now()


async def test_a_missing_mount_is_left_out_and_warn(
        proc: Path, tmp_path: Path, samplers: list[HostSampler]) -> None:
    missing = str(tmp_path / "not-a-mount")
    sampler = await started(samplers, config(proc, window=0.05, disks=("/", missing)),
                            probe_returning(HEALTHY))
    sample = await sampler.latest()
    assert [d.mount for d in sample.disks] == ["/"]
    assert sample.levels[f"disk_used_percent:{missing}"] == "WARN"


async def test_sampled_at_is_rfc3339_utc(proc: Path, samplers: list[HostSampler]) -> None:
    sampler = await started(samplers, config(proc, window=0.05), probe_returning(HEALTHY))
    stamp = (await sampler.latest()).sampled_at
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 5


async def test_latest_before_start_raises() -> None:
    sampler = HostSampler(SamplingConfig(), ThresholdsConfig(), probe_returning(HEALTHY))
    with pytest.raises(Internal):
        await sampler.latest()


async def test_stop_ends_every_task(proc: Path) -> None:
    sampler = HostSampler(config(proc, window=0.05), ThresholdsConfig(),
                          probe_returning(HEALTHY, delay=10.0))
    await sampler.start()
    await sampler.latest()
    await sampler.stop()
    await sampler.stop()
    others = [t for t in asyncio.all_tasks() if t.get_name().startswith("sampler-")]
    assert others == []


async def test_real_proc(samplers: list[HostSampler]) -> None:
    sampler = await started(samplers, config("/proc", window=0.1), probe_returning(HEALTHY))
    sample = await sampler.latest()
    assert sample.memory.total_bytes > sample.memory.available_bytes > 0
    assert 0.0 <= sample.cpu.steal_percent <= 100.0
    assert 0.0 <= sample.cpu.iowait_percent <= 100.0
    assert sample.disks[0].mount == "/" and sample.disks[0].total_bytes > 0
    wire = json.loads(json.dumps(sample.to_wire()))
    assert set(wire) == {"sampled_at", "status", "levels", "cpu", "load", "memory", "disks",
                         "docker"}


@pytest.mark.parametrize("yields", [0, 1, 2, 3])
async def test_stop_is_not_lost_when_a_probe_finishes_at_the_same_moment(
        proc: Path, yields: int) -> None:
    # Python 3.11's asyncio.wait_for drops a cancel that lands as the awaited
    # probe completes; stop() then waited forever on the docker task.
    sampler = HostSampler(config(proc, window=0.05), ThresholdsConfig(),
                          probe_returning(HEALTHY))
    await sampler.start()
    for _ in range(yields):
        await asyncio.sleep(0)
    async with asyncio.timeout(2):
        await sampler.stop()
