"""The background host sampler: a cache of :class:`HostSample` that answers at once.

Every ``sampling.interval_s`` the host loop reads ``/proc/stat``, starts
reading the disks (``statvfs`` in threads with a timeout), sleeps
``sampling.cpu_window_s`` (``asyncio.sleep``), reads ``/proc/stat`` again,
``/proc/meminfo`` and ``/proc/loadavg``, waits for the disks and replaces the
cache.  The first answer after start waits one window (and a 0.05 s grace) at
most: a mount whose ``statvfs`` is still running then is left out of it (WARN,
unsampled) and its call goes on for the next sample.  The Docker probe runs as its own task on
the same interval, so a slow Docker never delays the host part; its latest
result is merged into the cached sample as soon as it arrives.

A failure reading a source is logged (once per distinct message) and the
cache keeps the previous sample (its ``sampled_at`` shows its age); the loop
goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from agent.config import SamplingConfig, ThresholdsConfig
from agent.errors import Internal, UpstreamUnavailable
from agent.host.disk import DiskReader
from agent.host.levels import docker_levels, levels
from agent.host.loadavg import read_loadavg
from agent.host.meminfo import read_meminfo
from agent.host.model import DockerSummary, HostReadError, HostSample, worst
from agent.host.procstat import StatSnapshot, cpu_sample, read_stat

log = logging.getLogger(__name__)

DockerProbe = Callable[[], Awaitable[DockerSummary]]
SampleSink = Callable[[HostSample], Awaitable[None]]  # e.g. agent.host.history (per sample)
NOT_SAMPLED = DockerSummary(available=False, error="not sampled yet")
#: before the first answer, disks still being read this long after the cpu window are
#: left out of it (seconds)
FIRST_GRACE_S = 0.05
Stamped = tuple[StatSnapshot, float]  # a /proc/stat snapshot and its time.monotonic()


def rfc3339_utc(when: datetime | None = None) -> str:
    """``"2026-11-29T20:00:00Z"``: RFC 3339, UTC, whole seconds (default: now)."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_docker(sample: HostSample, docker: DockerSummary,
                thresholds: ThresholdsConfig) -> HostSample:
    """``sample`` with its docker part, docker levels and status replaced."""
    new_levels = {**sample.levels, **docker_levels(docker, thresholds)}
    return dataclasses.replace(sample, docker=docker, levels=new_levels,
                               status=worst(new_levels))


class HostSampler:
    """Samples the host in the background; :meth:`latest` answers from the cache.

    ``docker_probe`` returns a :class:`DockerSummary` (``available=False`` with
    ``error`` when Docker is down); an exception or a run longer than
    ``docker_timeout_s`` (default ``interval_s``) is turned into such a summary.
    ``on_sample`` is awaited with each background sample (its errors are logged, never
    fatal): the hourly history recorder.
    """

    def __init__(self, sampling: SamplingConfig, thresholds: ThresholdsConfig,
                 docker_probe: DockerProbe, *, disk_timeout_s: float = 2.0,
                 docker_timeout_s: float | None = None,
                 on_sample: SampleSink | None = None) -> None:
        self._on_sample = on_sample
        self._sampling = sampling
        self._thresholds = thresholds
        self._probe = docker_probe
        self._docker_timeout_s = docker_timeout_s or sampling.interval_s
        self._disks = DiskReader(disk_timeout_s)
        self._cache: HostSample | None = None
        self._docker: DockerSummary | None = None
        self._first_done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.last_error: str | None = None

    async def start(self) -> None:
        """Read ``/proc/stat`` once and start the host and Docker tasks (idempotent)."""
        if self._tasks:
            return
        first = self._read_stat_logged()
        self._tasks = [asyncio.create_task(self._docker_loop(), name="sampler-docker"),
                       asyncio.create_task(self._host_loop(first), name="sampler-host")]

    async def stop(self) -> None:
        """Cancel the background tasks and wait for them to end."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._disks.close()
        self._first_done.set()

    async def latest(self) -> HostSample:
        """The cached sample; before the first one, waits for it (at most ~one cpu window).

        Raises :class:`UpstreamUnavailable` (``upstream: "proc"``) when no
        sample could be taken, :class:`Internal` when the sampler was never started.
        """
        if self._cache is None and not self._tasks and not self._first_done.is_set():
            raise Internal("host sampler not started")
        await self._first_done.wait()
        if self._cache is None:
            raise UpstreamUnavailable("proc", f"no host sample: {self.last_error}")
        return self._cache

    async def sample_now(self) -> HostSample:
        """A fresh sample (a new cpu window and a new Docker probe); also cached.

        Raises OSError or :class:`HostReadError` when a /proc source fails.
        """
        docker = asyncio.create_task(self._probe_once())
        try:
            sample = await self._collect(None, docker)
        finally:
            docker.cancel()
        self._cache = sample
        return sample

    # -- background tasks ---------------------------------------------------------------

    async def _host_loop(self, first: Stamped | None) -> None:
        while True:
            started = first[1] if first else time.monotonic()
            await self._refresh(first)
            first = None
            await asyncio.sleep(self._until_next(started))

    async def _refresh(self, first: Stamped | None) -> None:
        try:
            self._cache = await self._collect(first)
            await self._record(self._cache)
            if self.last_error is not None:
                log.info("host sampling recovered")
            self.last_error = None
        except (OSError, HostReadError) as exc:
            self._failed(str(exc))
        except Exception as exc:  # the loop must survive anything a source throws
            log.exception("host sample failed")
            self.last_error = repr(exc)
        finally:
            self._first_done.set()

    async def _record(self, sample: HostSample) -> None:
        if self._on_sample is None:
            return
        try:
            await self._on_sample(sample)
        except Exception as exc:
            log.warning("host sample not recorded: %r", exc)

    async def _docker_loop(self) -> None:
        while True:
            started = time.monotonic()
            self._set_docker(await self._probe_once())
            await asyncio.sleep(self._until_next(started))

    def _until_next(self, started: float) -> float:
        return max(0.0, self._sampling.interval_s - (time.monotonic() - started))

    # -- one sample ---------------------------------------------------------------------

    async def _collect(self, first: Stamped | None,
                       docker: Awaitable[DockerSummary] | None = None) -> HostSample:
        prev, t0 = first or self._read_stat()
        window_left = max(0.0, self._sampling.cpu_window_s - (time.monotonic() - t0))
        # the disks are read during the window; before the first answer, a mount still
        # running when the window ends is left out (and its call goes on for the next)
        disks_read = asyncio.create_task(self._disks.read(
            self._sampling.disks, wait_s=window_left + FIRST_GRACE_S
            if self._cache is None else None))
        try:
            await asyncio.sleep(window_left)
            cur, t1 = self._read_stat()
            root = self._sampling.proc_root
            memory = read_meminfo(root)
            load = read_loadavg(cur.cores, root)
            disks, unsampled = await disks_read
        finally:
            disks_read.cancel()
        if docker is not None:
            self._set_docker(await docker)
        cpu = cpu_sample(prev, cur, t1 - t0)
        docker_part = self._docker or NOT_SAMPLED
        lv = levels(cpu=cpu, memory=memory, load=load, disks=disks, docker=docker_part,
                    thresholds=self._thresholds, unsampled_mounts=unsampled)
        return HostSample(sampled_at=rfc3339_utc(), status=worst(lv), levels=lv, cpu=cpu,
                          load=load, memory=memory, disks=disks, docker=docker_part)

    def _read_stat(self) -> Stamped:
        return read_stat(self._sampling.proc_root), time.monotonic()

    def _read_stat_logged(self) -> Stamped | None:
        try:
            return self._read_stat()
        except (OSError, HostReadError) as exc:
            self._failed(str(exc))
            return None

    def _failed(self, message: str) -> None:
        if message != self.last_error:
            log.warning("host sample failed: %s", message)
        self.last_error = message

    async def _probe_once(self) -> DockerSummary:
        try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
            async with asyncio.timeout(self._docker_timeout_s):
                return await self._probe()
        except TimeoutError:
            return DockerSummary(available=False, error=f"docker probe timed out after "
                                 f"{self._docker_timeout_s:g} s")
        except Exception as exc:
            log.warning("docker probe failed: %r", exc)
            return DockerSummary(available=False, error=str(exc) or type(exc).__name__)

    def _set_docker(self, docker: DockerSummary) -> None:
        if docker == self._docker:
            return
        self._docker = docker
        if self._cache is not None:
            self._cache = with_docker(self._cache, docker, self._thresholds)

