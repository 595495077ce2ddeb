"""Docker summary for the host sample, through the docker SDK (low-level API).

The SDK is imported on first use, not at module import (``import docker``
costs ~0.3 s and exec-to-READY must stay under 1 s).  Its calls block, so
each runs in a worker thread (``asyncio.to_thread``) under
``asyncio.timeout(timeout_s)``; the event loop never waits longer than that.
(Not ``asyncio.wait_for``: on Python 3.11 it can lose a cancellation that
arrives as the inner call finishes, and a stopping task would then run on.)

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
``DockerSummary(available=False, error=...)``; the client is dropped and
rebuilt on the next call, so a restarted engine is picked up by itself.
"""

from __future__ import annotations

import asyncio
import errno
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from agent.errors import UpstreamUnavailable
from agent.host.model import DockerSummary

if TYPE_CHECKING:
    from docker import DockerClient

T = TypeVar("T")
_ERRNO_TEXT = {
    errno.ENOENT: "socket not found",
    errno.ECONNREFUSED: "connection refused",
    errno.EACCES: "permission denied",
    errno.ECONNRESET: "connection reset",
}


class DockerEngine:
    """One Docker endpoint (``unix://``, ``tcp://`` ... as the SDK takes it).

    ``timeout_s`` (seconds) bounds every public call, client creation included.
    """

    def __init__(self, host: str, timeout_s: float) -> None:
        self.host = host
        self.timeout_s = timeout_s
        self._client: DockerClient | None = None

    async def summary(self) -> DockerSummary:
        """Counts and sorted unhealthy names; ``available=False`` with ``error`` when down.

        Never raises for an unreachable or failing engine.
        """
        try:
            return await self._call(_summary_of)
        except UpstreamUnavailable as exc:
            return DockerSummary(available=False, error=exc.message)

    async def ping(self) -> bool:
        """True when ``GET /_ping`` answers OK within the timeout; never raises."""
        try:
            return await self._call(lambda client: bool(client.ping()))
        except UpstreamUnavailable:
            return False

    def close(self) -> None:
        """Drop the client and its connection pool (the next call connects again)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def call(self, fn: Callable[[DockerClient], T], *, timeout_s: float | None = None) -> T:
        """``fn(client)`` in a worker thread, bounded by ``timeout_s`` (default: the engine's).

        Errors as :meth:`_call`; an AgentError raised by ``fn`` passes through unchanged
        (e.g. ``fn`` turning ``docker.errors.NotFound`` into ``agent.errors.NotFound``).
        """
        return await self._call(fn, timeout_s=timeout_s)

    async def _call(self, fn: Callable[[DockerClient], T], *,
                    timeout_s: float | None = None) -> T:
        """``fn(client)`` in a thread, bounded by ``timeout_s`` (default ``self.timeout_s``).

        Raises UpstreamUnavailable("docker", short reason) on any connection,
        timeout or API failure, after dropping the client.
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(limit):
                return await asyncio.to_thread(self._run, fn)
        except TimeoutError:
            self.close()
            raise UpstreamUnavailable(
                "docker", f"no answer from {self.host} within {limit:g} s") from None
        except Exception as exc:
            if not _is_docker_failure(exc):
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

        # The socket timeout is a second longer than the asyncio bound of _call, so a
        # silent engine is always reported by that bound, with one message.
        client = docker.DockerClient(base_url=self.host, version="auto",
                                     timeout=math.ceil(self.timeout_s) + 1)
        client.api.trust_env = False  # no proxy/netrc lookups per call (bench: ~4 % of a pass)
        return client


def _summary_of(client: DockerClient) -> DockerSummary:
    listed = client.api.containers(all=True)
    unhealthy = client.api.containers(filters={"health": "unhealthy"})  # running only
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


def _is_docker_failure(exc: BaseException) -> bool:
    """Connection, timeout and API errors (requests' errors are OSErrors)."""
    from docker.errors import DockerException  # loaded by now: a client was being used

    return isinstance(exc, OSError | DockerException)


def describe_failure(exc: BaseException, host: str) -> str:
    """A short, clear reason for ``exc`` (at most 200 characters)."""
    from docker.errors import APIError

    if isinstance(exc, APIError):
        text = f"Docker API error {exc.status_code}: {exc.explanation or exc}"
    elif (os_error := _root_os_error(exc)) is not None and os_error.errno in _ERRNO_TEXT:
        text = f"{_ERRNO_TEXT[os_error.errno]}: {host}"
    elif any(isinstance(e, TimeoutError) or "timed out" in str(e) for e in _causes(exc)):
        text = f"timed out talking to {host}"
    else:
        text = f"cannot use Docker at {host}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    return text[:200]


def _root_os_error(exc: BaseException) -> OSError | None:
    """The innermost OSError with an errno in ``exc``'s causes and args, if any."""
    found = None
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.errno is not None:
            found = cause
    return found


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it wraps: ``__cause__``, ``__context__`` and exception args."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack += [e for e in (current.__cause__, current.__context__) if e is not None]
        stack += [a for a in current.args if isinstance(a, BaseException)]
