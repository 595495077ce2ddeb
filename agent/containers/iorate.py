"""Per-container disk-write rates: the io sampler behind ``GET /v1/io``.

Every ``sampling.interval_s`` the sampler lists the running containers (one
cheap ``GET /containers/json``; ``GET /containers/{id}/json`` only for a
container it has not located yet, for ``State.Pid``, at most once a minute
while its cgroup cannot be found), reads each one's
cgroup write counter (:mod:`agent.containers.cgroupio`, in a worker thread)
and replaces its cache.  Docker's stats API (about 2 s per container) is not
used.

Rates, projections and levels are :mod:`agent.containers.iowrite` (a
counter that went down or a recreated cgroup restarts the baseline, so a
container is left out of the listing for one window and a rate is never
negative).  A container appears once it has two readings of the same
cgroup: the first reading (a new container, the agent's start) only sets
the baseline.  A container whose level rises raises one ``io.write_rate``
alert.

When Docker cannot be listed, the containers of the last good listing keep
being read (their cgroups do not need Docker); a container whose cgroup is
gone is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from agent.config import IoConfig
from agent.containers.blockstack import Holders, block_holders
from agent.containers.cgroupio import (
    DEFAULT_CGROUP_ROOT,
    CgroupLocation,
    CgroupReadError,
    locate,
    read_counter,
)
from agent.containers.engine import DockerEngine, container_name
from agent.containers.iowrite import (
    IoRate,
    Reading,
    RunningContainer,
    alert_for,
    io_level,
    projected_per_day,
    rate_between,
    rose,
    worst_first,
)
from agent.errors import Internal
from agent.host.model import Level
from agent.notify.events import AlertEvent

log = logging.getLogger("vm-agent")

#: A running container whose cgroup was not found is inspected again after this long.
RETRY_LOCATE_S = 60.0
Emit = Callable[[AlertEvent], Awaitable[object]]


class ContainerLister(Protocol):
    async def running(self) -> list[RunningContainer]: ...
    async def pid_of(self, container_id: str) -> int: ...


class IoSampler:
    """Samples container write counters in the background; :meth:`latest` answers from the cache.

    ``cgroup_root``/``proc_root``/``sys_root`` are where the cgroup mount, procfs and
    sysfs (which block devices are stacked on which) are;
    ``emit`` (optional) records an alert event; ``clock`` gives seconds
    (default ``time.monotonic``).
    """

    def __init__(self, cfg: IoConfig, lister: ContainerLister, *, interval_s: float,
                 cgroup_root: str = DEFAULT_CGROUP_ROOT, proc_root: str = "/proc",
                 sys_root: str = "/sys", emit: Emit | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.lister = lister
        self.interval_s = interval_s
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root
        self.sys_root = sys_root
        self.emit = emit
        self.clock = clock
        self.last_error: str | None = None
        self._listed: list[RunningContainer] = []
        self._where: dict[str, CgroupLocation] = {}
        self._retry_at: dict[str, float] = {}  # not located: inspect again after this time
        self._readings: dict[str, Reading] = {}
        self._levels: dict[str, Level] = {}
        self._cache: list[IoRate] = []
        self._first_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the background loop (idempotent); the first pass runs at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="sampler-io")

    async def stop(self) -> None:
        """Cancel the loop and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._first_done.set()

    async def latest(self) -> list[IoRate]:
        """The cached rates, worst first; before the first pass ends, waits for it.

        Raises :class:`Internal` when the sampler was never started (nor
        :meth:`sample_once` run).
        """
        if self._task is None and not self._first_done.is_set():
            raise Internal("io sampler not started")
        await self._first_done.wait()
        return list(self._cache)

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sample_once()
            except Exception:  # the loop must survive anything a source throws
                log.exception("io sample failed")
            finally:
                self._first_done.set()
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def sample_once(self) -> list[IoRate]:
        """One pass: list, locate new containers, read counters, rates, levels, alerts.

        Returns (and caches) the rates, worst first.
        """
        listed = await self._list()
        await self._locate_new(listed)
        read = await asyncio.to_thread(self._read_all, listed)
        for gone in [cid for cid, reading in read.items() if reading is None]:
            del self._where[gone]
        readings = {cid: r for cid, r in read.items() if r is not None}
        rows = self._rates(listed, readings)
        await self._alert(rows, {c.id for c in listed})
        self._cache = worst_first(rows)
        self._first_done.set()
        return list(self._cache)

    async def _list(self) -> list[RunningContainer]:
        try:
            self._listed = await self.lister.running()
            self._error(None)
        except Exception as exc:  # Docker down: keep reading the containers we know
            self._error(f"cannot list containers: {exc}")
            return self._listed
        ids = {c.id for c in self._listed}
        self._where = {cid: w for cid, w in self._where.items() if cid in ids}
        self._retry_at = {cid: t for cid, t in self._retry_at.items() if cid in ids}
        return self._listed

    async def _locate_new(self, listed: Sequence[RunningContainer]) -> None:
        now = self.clock()
        new = [c.id for c in listed
               if c.id not in self._where and self._retry_at.get(c.id, now) <= now]
        pids = await asyncio.gather(*(self.lister.pid_of(cid) for cid in new),
                                    return_exceptions=True)
        found = await asyncio.to_thread(self._locate_all, new, pids)
        self._where.update(found)
        retry = now + max(RETRY_LOCATE_S, self.interval_s)
        self._retry_at.update({cid: retry for cid in new if cid not in found})

    def _locate_all(self, ids: Sequence[str],
                    pids: Sequence[int | BaseException]) -> dict[str, CgroupLocation]:
        found = {}
        for cid, pid in zip(ids, pids, strict=True):
            where = locate(cid, pid if isinstance(pid, int) else None,
                           cgroup_root=self.cgroup_root, proc_root=self.proc_root)
            if where is not None:
                found[cid] = where
        return found

    def _read_all(self, listed: Sequence[RunningContainer]) -> dict[str, Reading | None]:
        """Each located container's reading; None for one whose cgroup is gone."""
        readings: dict[str, Reading | None] = {}
        holders: Holders = block_holders(self.sys_root) if self._where else {}
        for container in listed:
            where = self._where.get(container.id)
            if where is None:
                continue
            try:
                counter = read_counter(where, holders)
            except CgroupReadError:  # stopped or restarting: located again next pass
                readings[container.id] = None
                continue
            readings[container.id] = Reading(counter.write_bytes, counter.incarnation,
                                             self.clock())
        return readings

    def _rates(self, listed: Sequence[RunningContainer],
               readings: dict[str, Reading]) -> list[IoRate]:
        rows = []
        for container in listed:
            now = readings.get(container.id)
            if now is None:
                continue
            rate = rate_between(self._readings.get(container.id), now)
            if rate is not None:
                rows.append(self._row(container, *rate))
        self._readings = readings
        return rows

    def _row(self, container: RunningContainer, bytes_per_s: float, window_s: float) -> IoRate:
        projected = projected_per_day(bytes_per_s)
        return IoRate(container.name, container.id, bytes_per_s, projected,
                      io_level(projected, self.cfg), window_s, self._where[container.id].source)

    async def _alert(self, rows: Sequence[IoRate], listed: set[str]) -> None:
        """Emit for each row whose level rose; forget the levels of unlisted containers."""
        risen = [r for r in rows if rose(self._levels.get(r.id), r.level)]
        self._levels = {cid: lv for cid, lv in self._levels.items() if cid in listed}
        self._levels.update({r.id: r.level for r in rows})
        for row in risen:
            await self._emit(alert_for(row, self.cfg))

    async def _emit(self, event: AlertEvent) -> None:
        log.warning("%s", event.text)
        if self.emit is None:
            return
        try:
            await self.emit(event)
        except Exception:
            log.exception("io alert not recorded: %s", event.text)

    def _error(self, message: str | None) -> None:
        if message is not None and message != self.last_error:
            log.warning("io sampler: %s", message)
        self.last_error = message


class DockerLister:
    """:class:`ContainerLister` over a :class:`agent.containers.engine.DockerEngine`.

    ``running()`` is one ``GET /containers/json`` (running only);
    ``pid_of()`` one ``GET /containers/{id}/json``.  Both raise
    UpstreamUnavailable when Docker is down (the engine bounds them by its
    timeout); ``pid_of()`` raises NotFound for a container gone meanwhile.
    """

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine

    async def running(self) -> list[RunningContainer]:
        listed = await self.engine.containers()
        return [RunningContainer(str(c["Id"]), container_name(c)) for c in listed]

    async def pid_of(self, container_id: str) -> int:
        inspect = await self.engine.inspect_container(container_id)
        return int((inspect.get("State") or {}).get("Pid") or 0)
