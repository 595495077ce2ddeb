"""Containers from the Docker engine: one list call, then only the inspects needed.

Every Docker call is the engine's async client on the event loop, bounded
by a timeout (:class:`DockerEngine`).  Inspects run concurrently, at most
``concurrency`` at once.  Each inspected container also gets the image's
creation time (``GET /images/{id}/json``, cached per image id: an image id
names immutable content) and its memory use read from its cgroup
(:mod:`agent.containers.memory`; the reads of one call in one worker-thread
hop).

Errors: :class:`agent.errors.NotFound` for an unknown container,
:class:`agent.errors.UpstreamUnavailable` when Docker is down or fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

from agent.containers.engine import DockerEngine, container_name, health_status
from agent.containers.memory import memory_bytes
from agent.containers.model import (
    STACK_LABEL,
    Container,
    from_inspect,
    listed_health,
    parse_time,
)
from agent.errors import NotFound

MAX_LINE_CHARS = 8192
_IMAGE_CACHE_MAX = 1024


class Inventory:
    """Reads containers from ``engine``; ``cgroup_root``/``proc_root`` locate memory counters."""

    def __init__(self, engine: DockerEngine, *, cgroup_root: str = "/sys/fs/cgroup",
                 proc_root: str = "/proc", concurrency: int = 8) -> None:
        self.engine = engine
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root
        self._limit = asyncio.Semaphore(concurrency)
        self._image_created: dict[str, float | None] = {}
        self.cache = InspectCache()

    async def containers(self, *, stack: str | None = None,
                   unhealthy_only: bool = False) -> list[Container]:
        """Containers sorted by name; ``stack`` filters on the compose project label,
        ``unhealthy_only`` on Docker's ``health=unhealthy`` (running containers only).

        One ``GET /containers/json``, then an inspect of each listed container
        unless :class:`InspectCache` still holds a valid one (only while Docker's
        event stream is followed; unhealthy and starting ones are always inspected).
        """
        filters: dict[str, Any] = {}
        if stack is not None:
            filters["label"] = [f"{STACK_LABEL}={stack}"]
        if unhealthy_only:
            filters["health"] = ["unhealthy"]
        listed = await self.engine.containers(all_states=not unhealthy_only, filters=filters)
        cached = [raw for item in listed if (raw := self.cache.get(item)) is not None]
        known = {str(raw["Id"]) for raw in cached}
        fresh = await self.inspect_raw(str(i["Id"]) for i in listed if i["Id"] not in known)
        return sorted(await self._models([*fresh, *cached]), key=lambda c: c.name)

    async def unhealthy_listed(self) -> list[dict[str, Any]]:
        """The list entries (``Id``, ``Names``, ``State``, ``Status``, ``Labels`` ...) of
        running containers Docker reports unhealthy (one list call)."""
        return await self.engine.containers(filters={"health": ["unhealthy"]})

    async def inspect_many(self, ids: Iterable[str]) -> list[Container]:
        """Inspect each id concurrently (bounded); containers gone meanwhile are left out."""
        return await self._models(await self.inspect_raw(ids))

    async def inspect(self, ref: str) -> Container:
        """One container by exact name or full id; NotFound otherwise."""
        found = await self.inspect_many([ref])
        if not found or ref not in (found[0].name, found[0].id):
            raise NotFound(f"no container named {ref!r}", {"container": ref})
        return found[0]

    async def inspect_raw(self, ids: Iterable[str]) -> list[Mapping[str, Any]]:
        """Inspect answers of ``ids`` (on the loop, at most ``concurrency`` at once), each
        container's image creation time looked up; the ones gone meanwhile are left out.
        :meth:`model` turns one into a Container (blocking: it reads the cgroup)."""
        found = await asyncio.gather(*(self._inspect_one(i) for i in dict.fromkeys(ids)))
        return [raw for raw in found if raw is not None]

    async def _inspect_one(self, ref: str) -> Mapping[str, Any] | None:
        epoch = self.cache.epoch
        async with self._limit:
            try:
                raw = await self.engine.inspect_container(ref)
            except NotFound:
                return None
            await self._image_created_at(str(raw.get("Image") or ""))
        self.cache.put(raw, epoch)
        return raw

    async def _models(self, raws: list[Mapping[str, Any]]) -> list[Container]:
        """Containers of inspect answers; their cgroup memory reads in one worker hop."""
        if not raws:
            return []
        return await asyncio.to_thread(lambda: [self.model(raw) for raw in raws])

    def model(self, raw: Mapping[str, Any]) -> Container:
        """The Container of an inspect answer (from :meth:`inspect_raw`), with memory read
        from its cgroup now (blocking file reads: call it off the loop)."""
        pid = int((raw.get("State") or {}).get("Pid") or 0)
        used = memory_bytes(str(raw["Id"]), pid, cgroup_root=self.cgroup_root,
                            proc_root=self.proc_root)
        created = self._image_created.get(str(raw.get("Image") or ""))
        return from_inspect(raw, memory_bytes=used, image_created_at=created)

    async def _image_created_at(self, image_id: str) -> float | None:
        """The image's creation time (``GET /images/{id}/json`` once per image id)."""
        if not image_id:
            return None
        if image_id not in self._image_created:
            try:
                created = parse_time((await self.engine.inspect_image(image_id)).get("Created"))
            except NotFound:
                created = None
            if len(self._image_created) >= _IMAGE_CACHE_MAX:
                self._image_created.clear()
            self._image_created[image_id] = created
        return self._image_created[image_id]

    async def logs(self, container: Container, tail: int) -> list[dict[str, str]]:
        """The last ``tail`` lines (stdout and stderr interleaved as Docker stored them),
        each ``{time, text}`` (RFC 3339 with nanoseconds, as Docker gives it); a line
        over 8192 characters is cut.  NotFound when the container vanished."""
        try:
            text = await self.engine.logs(container.id, tail=tail)
        except NotFound:
            raise NotFound(f"container {container.id[:12]} is gone") from None
        return [_log_line(line) for line in text.splitlines()]

    async def restart(self, container_id: str, *, stop_timeout_s: int, margin_s: float) -> None:
        """``POST /containers/{id}/restart?t=stop_timeout_s``; waits up to that plus ``margin_s``.

        Raises NotFound when the container vanished, UpstreamUnavailable when
        Docker fails or does not answer in time.
        """
        try:
            await self.engine.restart(container_id, stop_timeout_s=stop_timeout_s,
                                      timeout_s=stop_timeout_s + margin_s)
        except NotFound:
            raise NotFound(f"container {container_id[:12]} is gone") from None


def _log_line(line: str) -> dict[str, str]:
    stamp, _, text = line.partition(" ")
    return {"time": stamp, "text": text[:MAX_LINE_CHARS]}



class InspectCache:
    """Inspect answers kept while Docker's event stream says nothing changed.

    Enabled only while the event stream is connected (:meth:`follow`); every
    container event (start, die, update, destroy, health_status, ...) drops
    that container's entry (:meth:`forget`).  An entry is used only when the
    list entry still shows the same ``State`` and health, the health is not
    ``unhealthy`` or ``starting`` (their FailingStreak and log move every
    check), the same name, and it is younger than ``max_age_s``.

    An inspect answer can arrive after an event that made it stale (sent
    before ``docker rename``/``update``, answered, then the event is handled
    first): :meth:`put` stores an answer only when no event was handled
    since the inspect was sent (``epoch``, read before sending it).
    """

    def __init__(self, max_age_s: float = 60.0) -> None:
        self.max_age_s = max_age_s
        self.enabled = False
        self._entries: dict[str, tuple[float, Mapping[str, Any]]] = {}
        #: Events handled so far: an answer to an inspect sent before the latest is not kept.
        self.epoch = 0

    def follow(self, *, connected: bool) -> None:
        """Turn the cache on (event stream connected) or off and empty it."""
        self.enabled = connected
        if not connected:
            self._entries.clear()

    def forget(self, container_id: str) -> None:
        """A container event: drop its entry, and refuse answers to inspects sent before."""
        self.epoch += 1
        self._entries.pop(container_id, None)

    def put(self, raw: Mapping[str, Any], epoch: int) -> None:
        """Keep ``raw``, an answer to an inspect sent when :attr:`epoch` was ``epoch``."""
        if self.enabled and epoch == self.epoch:
            self._entries[str(raw["Id"])] = (time.monotonic(), raw)

    def get(self, listed: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The cached inspect answer for a list entry, or None when it must be inspected."""
        entry = self._entries.get(str(listed.get("Id"))) if self.enabled else None
        if entry is None or time.monotonic() - entry[0] > self.max_age_s:
            return None
        raw, health = entry[1], listed_health(listed)
        same = (raw.get("State") or {}).get("Status") == listed.get("State") \
            and health_status(raw) == health \
            and str(raw.get("Name") or "").lstrip("/") == container_name(listed)
        return raw if same and health in ("healthy", "none") else None
