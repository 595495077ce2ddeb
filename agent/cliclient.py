"""``vm-agentctl``'s one request over the agent's Unix socket, and the checks on its answer.

Anything that is not a well-formed envelope (PROTOCOL.md) is :class:`Unreachable`, so the
command line reports UNKNOWN instead of a traceback: a refused or missing socket, a
server that closes or times out, a body that is not JSON (``NaN`` included), nests too
deeply, or is not ``{"ok": true, "data": ...}`` / ``{"ok": false, "error": {...}}``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
from typing import Any


class Unreachable(Exception):
    """The socket is missing, refuses us, did not answer in time, or answered garbage."""


async def _request(socket_path: str, method: str, path: str, body: dict[str, Any] | None,
                   timeout_s: float) -> tuple[int, dict[str, Any]]:
    import aiohttp  # here, not at import: ~90 ms that Ctrl-C or --help need not wait for

    connector = aiohttp.UnixConnector(path=socket_path)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, \
                session.request(method, f"http://localhost{path}", json=body) as resp:
            return resp.status, envelope_of(await resp.read())
    except aiohttp.ClientConnectorError as exc:
        raise Unreachable(_connect_error(socket_path, exc.os_error)) from None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise Unreachable(f"no usable answer from {socket_path}: {exc!r}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def envelope_of(raw: bytes) -> dict[str, Any]:
    """The reply body as an envelope dict.  Raises ``ValueError`` unless it is one."""
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("the reply nests too deeply") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise ValueError(f"not an envelope: {raw[:80]!r}")
    if obj["ok"] and "data" not in obj:
        raise ValueError("an ok envelope without data")
    if not obj["ok"] and not isinstance(obj.get("error"), dict):
        raise ValueError(f"a failure envelope without an error object: {raw[:80]!r}")
    return obj


def _connect_error(socket_path: str, err: OSError) -> str:
    if err.errno in (errno.EACCES, errno.EPERM):
        return (f"permission denied on {socket_path}: join the vm-agent group "
                f"(or vm-agent-ops) and log in again")
    if err.errno == errno.ECONNREFUSED and (kind := _not_a_socket(socket_path)):
        return f"{socket_path} is not a socket ({kind}): check --socket / $VMAGENT_SOCKET"
    if err.errno in (errno.ENOENT, errno.ECONNREFUSED):
        return (f"no agent socket at {socket_path} ({err.strerror}): is vm-agent.socket "
                f"running? (systemctl status vm-agent.socket); an agent started by hand "
                f"(make run: .run/agent.sock) is reached with --socket PATH or "
                f"$VMAGENT_SOCKET")
    return f"cannot connect to {socket_path}: {err.strerror or err}"


def _not_a_socket(socket_path: str) -> str:
    """``"a folder"``/``"a regular file"``/... when the path exists and is no socket, else ""."""
    try:
        mode = os.stat(socket_path).st_mode
    except OSError:
        return ""
    if stat.S_ISSOCK(mode):
        return ""
    return "a folder" if stat.S_ISDIR(mode) else \
        "a regular file" if stat.S_ISREG(mode) else "a special file"


def call(socket_path: str, method: str, path: str, body: dict[str, Any] | None = None, *,
         timeout_s: float = 30.0) -> tuple[int, dict[str, Any]]:
    """One request; returns (HTTP status, envelope).  Raises Unreachable."""
    return asyncio.run(_request(socket_path, method, path, body, timeout_s))
