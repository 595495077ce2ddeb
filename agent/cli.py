"""``vm-agentctl``: the operator's client for the agent's socket.

Exit status follows the monitoring-plugin convention: for ``health``, 0 OK,
1 WARN, 2 CRIT; 3 (UNKNOWN) when the agent cannot be reached, its answer
cannot be read, a read-only command is refused (403, 429, ...) or the
command line is wrong; 2 when the agent refused or failed a command that
changes something; for ``run``, 0 ok, 1 partial, 2 failed or refused (409, 423);
for ``ollama impact``, 0/1/2 for the load's level OK/WARN/CRIT.
``--json`` prints the envelope's ``data`` (or ``error``) as JSON; when the agent cannot
be reached or its answer cannot be read, ``{"code": "unreachable", "message", "details"}``.
Ctrl-C exits 130 without a traceback; a closed pipe (``| head -1``) ends output quietly
and keeps the exit status; another write error on stdout (a full disk) is UNKNOWN.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import agent
from agent import clifmt, cliroutes
from agent.cliclient import Unreachable, call

DEFAULT_SOCKET = "/run/vm-agent/agent.sock"
EXIT_OK, EXIT_WARN, EXIT_CRIT, EXIT_UNKNOWN = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
MAX_TIMEOUT_S = 7 * 86400.0
RUN_TIMEOUT_S = 6 * 3600.0
RESTART_TIMEOUT_S = 3600.0
OLLAMA_LOAD_TIMEOUT_S = 3700.0  # above ollama.load_timeout_s's maximum
_STATUS_EXIT = {"OK": EXIT_OK, "WARN": EXIT_WARN, "CRIT": EXIT_CRIT}


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


def _run_exit(data: dict[str, Any]) -> int:
    """``run``: 0 ok (or started with --no-wait), 1 partial, 2 failed or skipped."""
    return {"ok": EXIT_OK, "running": EXIT_OK, "partial": EXIT_WARN}.get(
        data.get("status", ""), EXIT_CRIT)


def _exit_status(args: argparse.Namespace, method: str, envelope: dict[str, Any]) -> int:
    """The exit status a reply gives; raises ``Unreachable`` when its data has the wrong shape."""
    try:
        return _status_of(args, method, envelope)
    except (AttributeError, KeyError, TypeError) as exc:
        raise Unreachable(f"the agent's answer to {args.cmd} could not be read: {exc!r}") \
            from None


def _status_of(args: argparse.Namespace, method: str, envelope: dict[str, Any]) -> int:
    if not envelope["ok"]:
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


def _texts(args: argparse.Namespace, envelope: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(stdout, stderr)`` text of a reply; raises ``Unreachable`` when it cannot be rendered."""
    if not envelope["ok"]:
        err = envelope["error"]
        return (json.dumps(err, indent=2) if args.json else None,
                f"vm-agentctl: {err.get('code')}: {err.get('message')}")
    if args.json:
        return json.dumps(envelope["data"], indent=2), None
    try:
        return clifmt.render(args.cmd, envelope["data"]), None
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise Unreachable(f"the agent's answer to {args.cmd} could not be read: {exc!r}") \
            from None


def _emit(out: str | None, err: str | None, status: int) -> int:
    """Print a reply; a closed pipe keeps ``status``, another write error is UNKNOWN."""
    try:
        if out is not None:
            print(out, flush=True)
    except BrokenPipeError:
        _stdout_to_devnull()  # the reader left (| head -1): no error, no second failure at exit
        return status
    except OSError as exc:
        _stdout_to_devnull()
        print(f"vm-agentctl: UNKNOWN: cannot write the answer: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_UNKNOWN
    if err is not None:
        print(err, file=sys.stderr)
    return status


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _unreachable(args: argparse.Namespace, message: str) -> int:
    """UNKNOWN: the message on stderr; with ``--json`` also an error object on stdout."""
    out = json.dumps({"code": "unreachable", "message": message,
                      "details": {"socket": args.socket}}, indent=2) if args.json else None
    return _emit(out, f"vm-agentctl: UNKNOWN: {message}", EXIT_UNKNOWN)


def _seconds(text: str) -> float:
    """``--timeout``: a finite number of seconds, above 0, at most a week."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"expected seconds above 0 and at most "
                                         f"{MAX_TIMEOUT_S:g}, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    from agent import prometheus  # imports aiohttp: inside main's Ctrl-C handling

    p = _Parser(prog="vm-agentctl", description="Query and drive vm-agent.",
                epilog="exit status: 0 OK, 1 WARN, 2 CRIT (or a change refused/failed), "
                       "3 UNKNOWN (agent unreachable, a query refused, bad usage)")
    p.add_argument("--socket", default=os.environ.get("VMAGENT_SOCKET", DEFAULT_SOCKET),
                   help=f"agent socket (default $VMAGENT_SOCKET or {DEFAULT_SOCKET})")
    p.add_argument("--json", action="store_true", help="print the reply's data as JSON")
    p.add_argument("--version", action="version", version=f"vm-agentctl {agent.__version__} "
                   "(the agent's own: vm-agentctl version)")
    p.add_argument("--timeout", type=_seconds, default=None,
                   help="seconds to wait, above 0 and at most a week (default 30; 6 h for run)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("health", help="the host sample; exit 0/1/2 for OK/WARN/CRIT",
                   description="The agent's latest host sample: steal, iowait, load per core, "
                   "MemAvailable, swap, disks, Docker. Exit 0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN "
                   "(agent unreachable).")
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


#: the jobs and their modes, as agent.jobs.catalog registers them (a unit test checks)
JOBS_HELP = ("cleanup (modes standard, weekly, monthly), watchdog, backup-repair, "
             "healthcheck, digest")


def _job_parsers(sub: Any) -> None:
    run = sub.add_parser("run", help="run a job; exit 0 ok, 1 partial, 2 failed or refused",
                         description=f"Run a job in the agent and wait for its record. Jobs: "
                         f"{JOBS_HELP}; `vm-agentctl jobs` lists them with their schedules. "
                         "Exit 0 ok, 1 partial, 2 failed or refused (409 one is running, "
                         "423 hold), 3 unreachable.")
    run.add_argument("job", help="job name (see: vm-agentctl jobs)")
    run.add_argument("--mode", help="job mode (default: the job's default mode)")
    run.add_argument("--dry-run", action="store_true", help="decide and report (for cleanup: "
                     "what would be freed), change nothing")
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


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse ``hold off`` & co (it would *set* a hold whose reason is "off") and arguments
    that are not UTF-8 (they reach a URL or a JSON body; ``--socket`` is a file name)."""
    if args.cmd == "hold" and len(args.reason) == 1 and args.reason[0].lower() in _LIFT_WORDS:
        parser.error(f"'hold {args.reason[0]}' would set a hold with the reason "
                     f"{args.reason[0]!r}; to lift the hold: vm-agentctl unhold")
    for name, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if name != "socket" and isinstance(text, str) and not _is_utf8(text):
                parser.error(f"argument {name} is not valid UTF-8: {text!r}")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates (PEP 383)
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vm-agentctl``; returns the exit status (130 on Ctrl-C)."""
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        print("vm-agentctl: interrupted (a request already sent may still be carried out)",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(_json_first(argv))
    _check_args(parser, args)
    method, path, body = cliroutes.route(args)
    try:
        _status, envelope = call(args.socket, method, path, body, timeout_s=_timeout(args))
        status = _exit_status(args, method, envelope)
        out, err = _texts(args, envelope)
    except Unreachable as exc:
        return _unreachable(args, str(exc))
    return _emit(out, err, status)


if __name__ == "__main__":
    sys.exit(main())
