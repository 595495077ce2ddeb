"""The Docker engine: the agent's async client on the event loop, and the docker SDK.

Hot calls (the container list and inspects, image inspects, restarts, logs,
the host sample's counts, the event stream) go through ``aiodocker``
(asyncio + aiohttp) on the event loop: no worker thread holds the GIL while
``GET /v1/health`` waits for it (issue 3, "Speed").  Each is bounded by
``asyncio.timeout(timeout_s)`` (not ``asyncio.wait_for``: on Python 3.11 it
can lose a cancellation that arrives as the inner call finishes).  The
aiodocker client is made on first use, inside the running loop, and kept:
aiohttp drops pooled connections the engine closed, so a restarted engine is
picked up by itself.  :meth:`DockerEngine.aclose` closes it.

The docker SDK (blocking, imported on first use: ``import docker`` costs
~0.3 s and ~7 MB) stays for the rarely used calls (cleanup's ``system df``
and prunes): :meth:`DockerEngine.call` runs them in a worker thread.

Counting (Docker Engine API ``GET /containers/json``, two cheap list calls,
no per-container inspect):

- ``containers_total``: every container, any state (``all=1``);
- ``running``: those whose ``State`` is ``running``;
- ``unhealthy``: running containers matching the ``health=unhealthy``
  filter.  A stopped container keeps its last ``State.Health`` in Docker,
  but no check runs any more, so it is counted as not running, not as
  unhealthy.  A container without a HEALTHCHECK has no ``State.Health`` key:
  its health is ``none`` (see :func:`health_status`) and it never counts.

Docker down (socket missing, connection refused, timeout, API error) gives
``DockerSummary(available=False, error=...)``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from agent.containers.dockerfail import describe_failure, is_sdk_failure
from agent.errors import AgentError, NotFound, UpstreamTimeout, UpstreamUnavailable
from agent.host.model import DockerSummary

if TYPE_CHECKING:
    import aiodocker
    from docker import DockerClient

T = TypeVar("T")


class DockerEngine:
    """One Docker endpoint (``unix:///path`` or ``tcp://host:port``).

    ``timeout_s`` (seconds) bounds every public call, client creation included.
    """

    def __init__(self, host: str, timeout_s: float) -> None:
        self.host = host
        self.timeout_s = timeout_s
        self._client: DockerClient | None = None
        self._aio: aiodocker.Docker | None = None

    async def summary(self) -> DockerSummary:
        """Counts and sorted unhealthy names; ``available=False`` with ``error`` when down.

        Never raises for an unreachable or failing engine.
        """
        try:
            return await self.query(_summary_of)
        except (UpstreamUnavailable, NotFound) as exc:
            return DockerSummary(available=False, error=exc.message)

    async def ping(self) -> bool:
        """True when ``GET /version`` answers within the timeout; never raises."""
        try:
            await self.query(lambda docker: docker.version())
        except AgentError:
            return False
        return True

    async def containers(self, *, all_states: bool = False,
                         filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """``GET /containers/json``: list entries (``Id``, ``Names``, ``State``, ``Status``,
        ``Labels`` ...); running ones only unless ``all_states``.  UpstreamUnavailable."""
        return await self.query(lambda docker: _list(docker, all_states, filters or {}))

    async def inspect_container(self, ref: str) -> dict[str, Any]:
        """``GET /containers/{ref}/json`` (name or id).  NotFound, UpstreamUnavailable."""
        return await self.query(lambda docker: _inspect(docker, ref))

    async def inspect_image(self, ref: str) -> dict[str, Any]:
        """``GET /images/{ref}/json``.  NotFound, UpstreamUnavailable."""
        return await self.query(lambda docker: docker.images.inspect(ref))

    async def restart(self, container_id: str, *, stop_timeout_s: int,
                      timeout_s: float) -> None:
        """``POST /containers/{id}/restart?t=stop_timeout_s``, waiting up to ``timeout_s``.

        NotFound when the container is gone or being removed (Docker says so
        with a 409/500); UpstreamUnavailable on other failures and timeouts.
        """
        import aiodocker

        try:
            await self.query(lambda docker: docker.containers.container(container_id).restart(
                t=stop_timeout_s, timeout=None), timeout_s=timeout_s)
        except UpstreamUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, aiodocker.DockerError) and _being_removed(cause.message):
                raise NotFound(f"container {container_id[:12]} is being removed") from None
            raise

    async def logs(self, container_id: str, *, tail: int) -> str:
        """The last ``tail`` log lines, stdout and stderr interleaved, each prefixed by its
        RFC 3339 timestamp.  NotFound, UpstreamUnavailable."""
        lines = await self.query(lambda docker: docker.containers.container(container_id).log(
            stdout=True, stderr=True, timestamps=True, tail=tail, timeout=None))
        return "".join(lines)

    async def events(self, *, since: float, until: float,
                     filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``GET /events?since&until&filters``: the events Docker still holds (its newest
        256, in memory) between Unix seconds ``since`` and ``until``, oldest first.  It
        returns at once only when ``until`` is not in the future: Docker streams events
        until then.  UpstreamUnavailable."""
        params = {"since": f"{since:.9f}", "until": f"{until:.9f}",
                  "filters": json.dumps(dict(filters))}

        async def fetch(docker: aiodocker.Docker) -> list[dict[str, Any]]:
            async with docker._query("events", params=params) as response:
                body = await response.read()
            return [json.loads(line) for line in body.splitlines() if line.strip()]

        return await self.query(fetch)

    async def query(self, fn: Callable[[aiodocker.Docker], Awaitable[T]], *,
                    timeout_s: float | None = None) -> T:
        """``await fn(docker)`` on the loop with the aiodocker client, bounded by ``timeout_s``
        (default: the engine's).

        Raises NotFound on a 404, UpstreamTimeout("docker", ...) (504) when no answer
        came within the limit, UpstreamUnavailable("docker", short reason) on any
        other API error or connection failure.
        """
        import aiodocker

        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(limit):
                return await fn(self._aiodocker())
        except TimeoutError:
            raise UpstreamTimeout(
                "docker", f"no answer from {self.host} within {limit:g} s") from None
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise NotFound(exc.message[:200]) from None
            raise UpstreamUnavailable("docker", describe_failure(exc, self.host)) from exc
        except (OSError, aiohttp.ClientError, ValueError) as exc:  # ValueError: bad JSON
            raise UpstreamUnavailable("docker", describe_failure(exc, self.host)) from exc

    def _aiodocker(self) -> aiodocker.Docker:
        if self._aio is None:
            import aiodocker  # lazy, as the SDK: kept out of start-up

            self._aio = aiodocker.Docker(url=self.host, timeout=aiohttp.ClientTimeout())
        return self._aio

    async def aclose(self) -> None:
        """Close the aiodocker client and the SDK client (the next call connects again)."""
        aio, self._aio = self._aio, None
        if aio is not None:
            await aio.close()
        self.close()

    def close(self) -> None:
        """Drop the SDK client and its connection pool (the next call connects again)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def call(self, fn: Callable[[DockerClient], T], *, timeout_s: float | None = None) -> T:
        """``fn(client)`` with the docker SDK in a worker thread, bounded by ``timeout_s``
        (default: the engine's).

        Raises UpstreamTimeout("docker", ...) (504) after ``timeout_s``,
        UpstreamUnavailable("docker", short reason) on any connection or API
        failure, after dropping the client; an AgentError raised by ``fn``
        passes through unchanged.
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(limit):
                return await asyncio.to_thread(self._run, fn)
        except TimeoutError:
            self.close()
            raise UpstreamTimeout(
                "docker", f"no answer from {self.host} within {limit:g} s") from None
        except Exception as exc:
            if not is_sdk_failure(exc):
                raise
            self.close()
            raise UpstreamUnavailable("docker", describe_failure(exc, self.host)) from exc

    def _run(self, fn: Callable[[DockerClient], T]) -> T:
        client = self._client
        if client is None:
            client = self._client = self._connect()
        return fn(client)

    def _connect(self) -> DockerClient:
        """A new SDK client; asks the engine its API version (one ``GET /version``)."""
        import docker  # lazy: ~0.3 s of imports, kept out of start-up

        # The socket timeout is a second longer than the asyncio bound of call, so a
        # silent engine is always reported by that bound, with one message.
        client = docker.DockerClient(base_url=self.host, version="auto",
                                     timeout=math.ceil(self.timeout_s) + 1)
        client.api.trust_env = False  # no proxy/netrc lookups per call
        return client


async def _list(docker: aiodocker.Docker, all_states: bool,
                filters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The raw list (``containers.list`` would wrap every entry in an object with its
    own log reader; ``_query_json`` is the request primitive aiodocker builds it on)."""
    params: dict[str, Any] = {"all": all_states}
    if filters:
        params["filters"] = dict(filters)
    listed: list[dict[str, Any]] = await docker._query_json("containers/json", params=params)
    return listed


async def _inspect(docker: aiodocker.Docker, ref: str) -> dict[str, Any]:
    """The raw inspect answer (``containers.container(ref).show()`` without the wrapper
    object and its log reader, which an inspect does not need)."""
    found: dict[str, Any] = await docker._query_json(f"containers/{ref}/json")
    return found


def _being_removed(message: str) -> bool:
    return "marked for removal" in message or "removal of container" in message


async def _summary_of(docker: aiodocker.Docker) -> DockerSummary:
    listed, unhealthy = await asyncio.gather(
        _list(docker, True, {}), _list(docker, False, {"health": ["unhealthy"]}))
    return summarize(listed, unhealthy)


def summarize(listed: Sequence[Mapping[str, Any]],
              unhealthy: Sequence[Mapping[str, Any]]) -> DockerSummary:
    """A DockerSummary from two ``GET /containers/json`` answers.

    ``listed``: every container (``all=1``); ``unhealthy``: the running ones
    matching ``health=unhealthy``.  Names lose their leading ``/``.
    """
    names = sorted(container_name(c) for c in unhealthy)
    return DockerSummary(
        available=True,
        containers_total=len(listed),
        running=sum(1 for c in listed if c.get("State") == "running"),
        unhealthy=len(names),
        unhealthy_names=tuple(names),
    )


def container_name(listed: Mapping[str, Any]) -> str:
    """The container's own name from a list entry's ``Names`` (``["/web"]`` -> ``web``).

    Link aliases (``/other/alias``) are skipped, as ``docker ps`` does; falls
    back to the short id.
    """
    names = [str(n).lstrip("/") for n in listed.get("Names") or ()]
    own = [n for n in names if "/" not in n]
    return (own or names or [str(listed.get("Id", ""))[:12]])[0]


def health_status(inspect: Mapping[str, Any]) -> str:
    """``State.Health.Status`` of a ``GET /containers/{id}/json`` answer.

    ``starting``, ``healthy`` or ``unhealthy``; ``none`` when the container
    has no healthcheck (Docker then omits the ``State.Health`` key).
    """
    health = (inspect.get("State") or {}).get("Health") or {}
    return str(health.get("Status") or "none")
