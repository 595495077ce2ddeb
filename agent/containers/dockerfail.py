"""Short, clear reasons for Docker failures, from aiodocker or the docker SDK.

Used by :class:`agent.containers.engine.DockerEngine` for the ``error`` of an
unavailable Docker and the message of UpstreamUnavailable.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator

_AIODOCKER_NO_HTTP = 900  # aiodocker's DockerError status for "could not connect"
_ERRNO_TEXT = {
    errno.ENOENT: "socket not found",
    errno.ECONNREFUSED: "connection refused",
    errno.EACCES: "permission denied",
    errno.ECONNRESET: "connection reset",
}
#: what a human can do about it, after the reason
_ERRNO_HINT = {
    errno.ENOENT: "is Docker running here? (systemctl status docker; docker.host in the "
                  "config; thresholds.docker_unavailable: OK on a host without Docker)",
    errno.ECONNREFUSED: "is Docker running? (systemctl status docker)",
    errno.EACCES: "the agent runs as root under systemd; by hand, run it as root",
}


def is_sdk_failure(exc: BaseException) -> bool:
    """The SDK's connection, timeout and API errors (requests' errors are OSErrors)."""
    from docker.errors import DockerException  # loaded by now: a client was being used

    return isinstance(exc, OSError | DockerException)


def describe_failure(exc: BaseException, host: str) -> str:
    """A short, clear reason for ``exc`` (at most 300 characters); from aiodocker
    or from the SDK (looked up only when the SDK is loaded)."""
    sdk = sys.modules.get("docker.errors")
    aio = sys.modules.get("aiodocker.exceptions")
    if aio is not None and isinstance(exc, aio.DockerError) and exc.status != _AIODOCKER_NO_HTTP:
        text = f"Docker API error {exc.status}: {exc.message}"
    elif sdk is not None and isinstance(exc, sdk.APIError):
        text = f"Docker API error {exc.status_code}: {exc.explanation or exc}"
    elif (os_error := _root_os_error(exc)) is not None and os_error.errno in _ERRNO_TEXT:
        text = f"{_ERRNO_TEXT[os_error.errno]}: {host}"
        if hint := _ERRNO_HINT.get(os_error.errno):
            text = f"{text}; {hint}"
    elif any(isinstance(e, TimeoutError) or "timed out" in str(e) for e in _causes(exc)):
        text = f"timed out talking to {host}"
    else:
        text = f"cannot use Docker at {host}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    return text[:300]


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
