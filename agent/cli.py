"""``vm-agentctl``: the operator's client for the agent's socket.

Exit status follows the monitoring-plugin convention: for ``health``, 0 OK,
1 WARN, 2 CRIT; for every command, 3 when the agent cannot be reached or
its answer cannot be read (UNKNOWN), and 2 when the agent refused or failed
the command.  ``--json`` prints the envelope's ``data`` (or ``error``) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import aiohttp

from agent import clifmt

DEFAULT_SOCKET = "/run/vm-agent/agent.sock"
EXIT_OK, EXIT_WARN, EXIT_CRIT, EXIT_UNKNOWN = 0, 1, 2, 3
_STATUS_EXIT = {"OK": EXIT_OK, "WARN": EXIT_WARN, "CRIT": EXIT_CRIT}


class Unreachable(Exception):
    """The socket is missing, refuses us, or did not answer in time."""


async def _request(socket_path: str, method: str, path: str, body: dict[str, Any] | None,
                   timeout_s: float) -> tuple[int, dict[str, Any]]:
    connector = aiohttp.UnixConnector(path=socket_path)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, \
                session.request(method, f"http://localhost{path}", json=body) as resp:
            return resp.status, await resp.json(content_type=None)
    except aiohttp.ClientConnectorError as exc:
        raise Unreachable(_connect_error(socket_path, exc.os_error)) from None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise Unreachable(f"no usable answer from {socket_path}: {exc!r}") from None


def _connect_error(socket_path: str, err: OSError) -> str:
    if err.errno in (errno.EACCES, errno.EPERM):
        return (f"permission denied on {socket_path}: join the vm-agent group "
                f"(or vm-agent-ops) and log in again")
    if err.errno in (errno.ENOENT, errno.ECONNREFUSED):
        return (f"no agent socket at {socket_path} ({err.strerror}): is vm-agent.socket "
                f"running? (systemctl status vm-agent.socket)")
    return f"cannot connect to {socket_path}: {err.strerror or err}"


def call(socket_path: str, method: str, path: str, body: dict[str, Any] | None = None, *,
         timeout_s: float = 30.0) -> tuple[int, dict[str, Any]]:
    """One request; returns (HTTP status, envelope).  Raises Unreachable."""
    return asyncio.run(_request(socket_path, method, path, body, timeout_s))


def _route(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    if args.cmd == "health":
        return "GET", "/v1/health", None
    if args.cmd == "version":
        return "GET", "/v1/version", None
    if args.cmd == "hold":
        if args.reason:
            return "PUT", "/v1/hold", {"reason": " ".join(args.reason)}
        return "GET", "/v1/hold", None
    if args.cmd == "unhold":
        return "DELETE", "/v1/hold", None
    raise AssertionError(args.cmd)


def _exit_status(args: argparse.Namespace, envelope: dict[str, Any]) -> int:
    if not envelope.get("ok"):
        return EXIT_CRIT
    if args.cmd == "health":
        return _STATUS_EXIT.get(envelope["data"].get("status"), EXIT_UNKNOWN)
    return EXIT_OK


def _print(args: argparse.Namespace, envelope: dict[str, Any]) -> None:
    if not envelope.get("ok"):
        err = envelope.get("error", {})
        if args.json:
            print(json.dumps(err, indent=2))
        print(f"vm-agentctl: {err.get('code')}: {err.get('message')}", file=sys.stderr)
        return
    data = envelope["data"]
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(clifmt.render(args.cmd, data))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vm-agentctl", description="Query and drive vm-agent.",
                                epilog="exit status: 0 OK, 1 WARN, 2 CRIT or refused, "
                                       "3 agent unreachable")
    p.add_argument("--socket", default=os.environ.get("VMAGENT_SOCKET", DEFAULT_SOCKET),
                   help=f"agent socket (default $VMAGENT_SOCKET or {DEFAULT_SOCKET})")
    p.add_argument("--json", action="store_true", help="print the reply's data as JSON")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("health", help="the host sample; exit 0/1/2 for OK/WARN/CRIT")
    sub.add_parser("version", help="agent version, uptime and config digest")
    hold = sub.add_parser("hold", help="show the maintenance hold, or set it with a reason")
    hold.add_argument("reason", nargs="*", help="why destructive jobs are paused")
    sub.add_parser("unhold", help="lift the maintenance hold")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vm-agentctl``; returns the exit status."""
    args = _parser().parse_args(argv)
    method, path, body = _route(args)
    try:
        _status, envelope = call(args.socket, method, path, body, timeout_s=args.timeout)
    except Unreachable as exc:
        print(f"vm-agentctl: UNKNOWN: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    _print(args, envelope)
    return _exit_status(args, envelope)


if __name__ == "__main__":
    sys.exit(main())
