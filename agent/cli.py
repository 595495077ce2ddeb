"""``vm-agentctl``: the operator's client for the agent's socket.

Exit status follows the monitoring-plugin convention: for ``health``, 0 OK,
1 WARN, 2 CRIT; 3 (UNKNOWN) when the agent cannot be reached, its answer
cannot be read, a read-only command is refused (403, 429, ...) or the
command line is wrong; 2 when the agent refused or failed a command that
changes something; for ``run``, 0 ok, 1 partial, 2 failed or refused (409, 423);
for ``ollama impact``, 0/1/2 for the load's level OK/WARN/CRIT.
``--json`` prints the envelope's ``data`` (or ``error``) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any, NoReturn

import aiohttp

from agent import clifmt, prometheus

DEFAULT_SOCKET = "/run/vm-agent/agent.sock"
EXIT_OK, EXIT_WARN, EXIT_CRIT, EXIT_UNKNOWN = 0, 1, 2, 3
RUN_TIMEOUT_S = 6 * 3600.0
RESTART_TIMEOUT_S = 3600.0
OLLAMA_LOAD_TIMEOUT_S = 3700.0  # above ollama.load_timeout_s's maximum
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
    if args.cmd == "io":
        return "GET", "/v1/io", None
    if args.cmd == "score":
        return "GET", "/v1/score", None
    if args.cmd == "trend":
        return "GET", f"/v1/metrics/trend/{args.kind}?range={args.range}", None
    if args.cmd in ("run", "jobs", "runs"):
        return _job_route(args)
    if args.cmd in ("containers", "logs", "restart", "restart-unhealthy"):
        return _container_route(args)
    if args.cmd == "ollama":
        return _ollama_route(args)
    raise AssertionError(args.cmd)


def _job_route(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """``run``/``jobs``/``runs``: the job runner's routes (PROTOCOL.md)."""
    if args.cmd == "jobs":
        return "GET", "/v1/jobs", None
    job = urllib.parse.quote(args.job, safe="")
    if args.cmd == "runs":
        return "GET", f"/v1/jobs/{job}/runs?limit={args.limit}", None
    body: dict[str, Any] = {"dry_run": args.dry_run, "wait": not args.no_wait,
                            "trigger": args.trigger or _trigger()}
    if args.mode:
        body["mode"] = args.mode
    return "POST", f"/v1/jobs/{job}/run", body


def _container_route(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """``containers``/``logs``/``restart``/``restart-unhealthy`` (PROTOCOL.md)."""
    if args.cmd == "containers":
        query = {"filter": args.filter, **({"stack": args.stack} if args.stack else {})}
        return "GET", "/v1/containers?" + urllib.parse.urlencode(query), None
    if args.cmd == "restart-unhealthy":
        return "POST", "/v1/containers/restart-unhealthy", None
    name = urllib.parse.quote(args.name, safe="")
    if args.cmd == "logs":
        return "GET", f"/v1/containers/{name}/logs?tail={args.tail}", None
    return "POST", f"/v1/containers/{name}/restart", None


def _ollama_route(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """``ollama models|loaded|impact M|load M [--force]|unload M`` (PROTOCOL.md)."""
    sub = args.ollama_cmd
    if sub in ("models", "loaded"):
        return "GET", f"/v1/ollama/{sub}", None
    if sub == "impact":
        query = urllib.parse.urlencode({"model": args.model})
        return "GET", f"/v1/ollama/load-impact?{query}", None
    if sub == "load":
        return "POST", "/v1/ollama/load", {"model": args.model, "force": args.force}
    return "POST", "/v1/ollama/unload", {"model": args.model}


def _ollama_parsers(sub: Any) -> None:
    ollama = sub.add_parser("ollama", help="Ollama: models, loaded, impact M, load M, unload M")
    osub = ollama.add_subparsers(dest="ollama_cmd", required=True, metavar="SUBCOMMAND")
    osub.add_parser("models", help="local models: size, modified, whether loaded")
    osub.add_parser("loaded", help="loaded models, their RAM/CPU, the RAM bar, GPU visibility")
    for name, text in (("impact", "predicted free RAM if MODEL were loaded"),
                       ("load", "load MODEL (refused under the free-RAM floor unless --force)"),
                       ("unload", "unload MODEL")):
        cmd = osub.add_parser(name, help=text)
        cmd.add_argument("model", help="model name, e.g. llama3.2:3b")
        if name == "load":
            cmd.add_argument("--force", action="store_true", help="load even under the floor")


def _trigger() -> str:
    """``timer`` when started by systemd (a unit's ``INVOCATION_ID``, no terminal), else ``cli``."""
    return "timer" if os.environ.get("INVOCATION_ID") and not sys.stdin.isatty() else "cli"


def _run_exit(data: dict[str, Any]) -> int:
    """``run``: 0 ok (or started with --no-wait), 1 partial, 2 failed or skipped."""
    return {"ok": EXIT_OK, "running": EXIT_OK, "partial": EXIT_WARN}.get(
        data.get("status", ""), EXIT_CRIT)


def _exit_status(args: argparse.Namespace, method: str, envelope: dict[str, Any]) -> int:
    if not envelope.get("ok"):
        return EXIT_UNKNOWN if method == "GET" else EXIT_CRIT
    if args.cmd == "run":
        return _run_exit(envelope["data"])
    if args.cmd == "health":
        return _STATUS_EXIT.get(envelope["data"].get("status"), EXIT_UNKNOWN)
    if args.cmd == "io":
        return max((_STATUS_EXIT.get(r.get("level"), EXIT_UNKNOWN) for r in envelope["data"]),
                   default=EXIT_OK)
    if args.cmd == "ollama" and args.ollama_cmd == "impact":
        return _STATUS_EXIT.get(envelope["data"].get("level"), EXIT_UNKNOWN)
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
    p = _Parser(prog="vm-agentctl", description="Query and drive vm-agent.",
                epilog="exit status: 0 OK, 1 WARN, 2 CRIT (or a change refused/failed), "
                       "3 UNKNOWN (agent unreachable, a query refused, bad usage)")
    p.add_argument("--socket", default=os.environ.get("VMAGENT_SOCKET", DEFAULT_SOCKET),
                   help=f"agent socket (default $VMAGENT_SOCKET or {DEFAULT_SOCKET})")
    p.add_argument("--json", action="store_true", help="print the reply's data as JSON")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait (default 30; 6 h for run)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("health", help="the host sample; exit 0/1/2 for OK/WARN/CRIT")
    sub.add_parser("version", help="agent version, uptime and config digest")
    hold = sub.add_parser("hold", help="show the maintenance hold, or set it with a reason")
    hold.add_argument("reason", nargs="*", help="why destructive jobs are paused")
    sub.add_parser("unhold", help="lift the maintenance hold")
    sub.add_parser("io", help="per-container disk writes (bytes/s, projected per day), worst "
                   "first; exit 0/1/2 for the worst OK/WARN/CRIT")
    sub.add_parser("score", help="the VM score card: 0-100 and the points of each dimension")
    trend = sub.add_parser("trend", help="a Prometheus trend; disk gives days until the "
                           "warning threshold")
    trend.add_argument("kind", choices=prometheus.KINDS)
    trend.add_argument("--range", choices=tuple(prometheus.RANGES), default="24h")
    _job_parsers(sub)
    _container_parsers(sub)
    _ollama_parsers(sub)
    return p


def _container_parsers(sub: Any) -> None:
    ls = sub.add_parser("containers", help="containers: state, health, memory, watchdog status")
    ls.add_argument("--filter", choices=("all", "unhealthy", "no-memory-limit"), default="all")
    ls.add_argument("--stack", help="only this compose project")
    logs = sub.add_parser("logs", help="last log lines of a container (stdout and stderr)")
    logs.add_argument("name", help="container name")
    logs.add_argument("--tail", type=int, default=50, help="how many lines (1-500, default 50)")
    restart = sub.add_parser("restart", help="restart one container (403 protected, 423 hold, "
                             "429 over its restart budget)")
    restart.add_argument("name", help="container name")
    sub.add_parser("restart-unhealthy", help="restart every unhealthy, unprotected container")


def _job_parsers(sub: Any) -> None:
    run = sub.add_parser("run", help="run a job; exit 0 ok, 1 partial, 2 failed or refused")
    run.add_argument("job", help="job name (see: vm-agentctl jobs)")
    run.add_argument("--mode", help="job mode (default: the job's default mode)")
    run.add_argument("--dry-run", action="store_true", help="report what would be freed; "
                     "change nothing")
    run.add_argument("--no-wait", action="store_true", help="return the run id at once")
    run.add_argument("--trigger", choices=("cli", "timer"),
                     help="recorded trigger (default: timer under systemd, else cli)")
    sub.add_parser("jobs", help="jobs with schedule, next run and last run")
    runs = sub.add_parser("runs", help="recent run records of one job, newest first")
    runs.add_argument("job", help="job name")
    runs.add_argument("--limit", type=int, default=30, help="how many (1-500, default 30)")


def _timeout(args: argparse.Namespace) -> float:
    """``--timeout``, else 30 s; a waited-for ``run`` gets RUN_TIMEOUT_S (jobs take minutes),
    restarts RESTART_TIMEOUT_S (a container may take its StopTimeout to stop)."""
    if args.timeout is not None:
        return float(args.timeout)
    if args.cmd in ("restart", "restart-unhealthy"):
        return RESTART_TIMEOUT_S  # the agent waits for StopTimeout + a margin per container
    if args.cmd == "ollama" and args.ollama_cmd == "load":
        return OLLAMA_LOAD_TIMEOUT_S  # reading a model of several GB from disk
    return RUN_TIMEOUT_S if args.cmd == "run" and not args.no_wait else 30.0


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 3 (UNKNOWN), not argparse's 2, which would read as CRIT."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_UNKNOWN, f"{self.prog}: error: {message}\n")


def _json_first(argv: list[str]) -> list[str]:
    """Accept ``--json`` after the command too (``vm-agentctl health --json``)."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--json" in argv[1:end]:
        argv = ["--json", *(a for i, a in enumerate(argv) if not (a == "--json" and i < end))]
    return argv


#: ``hold WORD`` with one of these is almost surely an attempt to lift the hold.
_LIFT_WORDS = frozenset({"off", "clear", "release", "lift", "remove", "none", "stop", "end",
                         "unset", "cancel", "delete", "no", "false", "0"})


def _check_hold(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse ``hold off`` & co: it would *set* a hold whose reason is "off"."""
    if args.cmd == "hold" and len(args.reason) == 1 and args.reason[0].lower() in _LIFT_WORDS:
        parser.error(f"'hold {args.reason[0]}' would set a hold with the reason "
                     f"{args.reason[0]!r}; to lift the hold: vm-agentctl unhold")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vm-agentctl``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(_json_first(sys.argv[1:] if argv is None else list(argv)))
    _check_hold(parser, args)
    method, path, body = _route(args)
    try:
        _status, envelope = call(args.socket, method, path, body, timeout_s=_timeout(args))
    except Unreachable as exc:
        print(f"vm-agentctl: UNKNOWN: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    _print(args, envelope)
    return _exit_status(args, method, envelope)


if __name__ == "__main__":
    sys.exit(main())
