"""``vm-agent``: the daemon.  Wiring only: config -> services -> app -> socket -> READY.

``vm-agent serve`` loads the config (exit 78 on a bad one), takes the socket
from systemd or binds it, starts the sampler, answers requests, tells systemd
it is ready, pings the watchdog from the event loop, and on SIGTERM/SIGINT
stops accepting, lets in-flight requests finish (bounded by
``server.shutdown_timeout_s``) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

from aiohttp import web

import agent
from agent import faults
from agent.api.access import AccessPolicy
from agent.api.commands import COMMANDS
from agent.api.server import ServerState, make_runner
from agent.api.transport import ConnectionGuard, GuardedUnixSite
from agent.audit import Auditor
from agent.config import Config
from agent.configload import effective_config, load_config
from agent.errors import ConfigError
from agent.journal import JournalHandler, JournalWriter
from agent.listener import SocketInUse, acquire
from agent.systemd import ListenFdsError, Notifier, watchdog_loop
from agent.wiring import build_services, start_services, stop_services

log = logging.getLogger("vm-agent")

EX_OK, EX_UNAVAILABLE, EX_CONFIG = 0, 69, 78  # sysexits.h
#: On a stop, how long an accepted connection that has sent no request yet may take to
#: send it (seconds); an idle client holds the stop up no longer than this.
FIRST_REQUEST_GRACE_S = 1.0
DEFAULT_CONFIG = "/etc/vm-agent/vm-agent.yaml"
# After the drain (server.shutdown_timeout_s), what is still running gets this long.
_CLEANUP_GRACE_S = 1.0


def _setup_logging(writer: JournalWriter, *, verbose: bool) -> None:
    handler: logging.Handler = JournalHandler(writer)
    if not os.path.exists(writer.socket_path):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in ("vm-agent", "agent"):  # modules log to "vm-agent" or to their __name__
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        logger.propagate = False


def _with_overrides(cfg: Config, args: argparse.Namespace) -> Config:
    if args.socket:
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, socket=args.socket))
    if args.state_dir:
        cfg = dataclasses.replace(cfg, state_dir=args.state_dir)
    if args.run_dir:
        cfg = dataclasses.replace(cfg, run_dir=args.run_dir)
    return cfg


class Daemon:
    """One running agent; :meth:`run` returns when a stop signal has been handled."""

    def __init__(self, cfg: Config, config_path: str | None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.notifier = Notifier()
        self.stop_event = asyncio.Event()

    async def run(self, sock: socket.socket, *, socket_activated: bool) -> None:
        auditor = Auditor()
        services = build_services(self.cfg, auditor, config_path=self.config_path,
                                  socket_activated=socket_activated)
        guard = ConnectionGuard(max_connections=self.cfg.server.max_connections,
                                client_timeout_s=self.cfg.server.client_timeout_s,
                                proc_root=self.cfg.sampling.proc_root)
        state = ServerState(services, AccessPolicy(self.cfg.access), auditor, guard)
        runner = make_runner(COMMANDS, state, shutdown_timeout=_CLEANUP_GRACE_S)
        await runner.setup()
        await start_services(services)
        site = GuardedUnixSite(runner, sock, guard)
        await site.start()
        self._install_signals()
        pinger = self._start_watchdog()
        self.notifier.ready(f"serving on {_sock_name(sock)}")
        log.info("vm-agent %s ready on %s (socket-activated: %s)", agent.__version__,
                 _sock_name(sock), socket_activated)
        await self.stop_event.wait()
        await self._shutdown(runner, site, state, pinger)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        faults.install(loop)  # test-only; nothing unless VMAGENT_TEST_FAULTS=1

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s: stopping", sig.name)
        self.notifier.stopping()
        self.stop_event.set()

    def _start_watchdog(self) -> asyncio.Task[None] | None:
        interval = self.notifier.watchdog_interval_s()
        if interval is None:
            return None
        return asyncio.create_task(watchdog_loop(self.notifier, interval))

    async def _shutdown(self, runner: web.BaseRunner, site: GuardedUnixSite, state: ServerState,
                        pinger: asyncio.Task[None] | None) -> None:
        self.notifier.status("stopping: finishing in-flight requests")
        await site.stop()  # stop accepting; requests already begun go on
        state.inflight.draining = True  # replies from now on close their connection
        # accepted connections whose request has not arrived yet get a moment to send it
        await state.guard.first_requests(FIRST_REQUEST_GRACE_S)
        timeout_s = self.cfg.server.shutdown_timeout_s
        if not await state.inflight.drained(timeout_s):
            log.warning("%d request(s) still running after %.1f s; cancelling them",
                        state.inflight.count, timeout_s)
        await runner.cleanup()  # closes idle keep-alive connections, cancels what is left
        await stop_services(state.services)
        if pinger is not None:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
        log.info("stopped")


def _sock_name(sock: socket.socket) -> str:
    name = sock.getsockname()
    return name if isinstance(name, str) and name else "<systemd socket>"


def _serve(args: argparse.Namespace) -> int:
    writer = JournalWriter()
    _setup_logging(writer, verbose=args.verbose)
    args.config = _config_path(args.config)
    try:
        cfg = _with_overrides(load_config(args.config), args)
    except ConfigError as exc:
        print(f"vm-agent: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if (unusable := _unusable_dir(cfg)) is not None:
        print(f"vm-agent: configuration error: {unusable}", file=sys.stderr)
        return EX_CONFIG
    try:
        sock, activated = acquire(cfg.server.socket, mode=cfg.server.socket_mode)
    except (SocketInUse, ListenFdsError, OSError) as exc:
        print(f"vm-agent: cannot listen on {cfg.server.socket}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    try:
        config_path = os.path.abspath(args.config) if args.config else None
        asyncio.run(Daemon(cfg, config_path).run(sock, socket_activated=activated))
    finally:
        if not activated:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cfg.server.socket)
    return EX_OK


def _unusable_dir(cfg: Config) -> str | None:
    """Why ``state_dir`` or ``run_dir`` cannot be used (created when missing), else None:
    e.g. a regular file there, which no restart can fix (exit 78)."""
    for key, path in (("state_dir", cfg.state_dir), ("run_dir", cfg.run_dir)):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            return f"{key}: cannot use {path}: {exc.strerror or exc}"
    return None


def _config_path(given: str | None) -> str | None:
    """``--config``, else DEFAULT_CONFIG when it exists, else None (built-in defaults)."""
    if given is not None:
        return given
    if os.path.exists(DEFAULT_CONFIG):
        return DEFAULT_CONFIG
    log.warning("no --config and no %s: using built-in defaults", DEFAULT_CONFIG)
    return None


def _check_config(args: argparse.Namespace) -> int:
    args.config = _config_path(args.config)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"vm-agent: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    print(json.dumps(effective_config(cfg), indent=2, sort_keys=True))
    return EX_OK


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vm-agent", description="The vm-agent daemon: host "
                                "sampling, maintenance jobs and an allow-listed JSON protocol "
                                "on a Unix socket. Operators use vm-agentctl.")
    p.add_argument("--version", action="version", version=f"vm-agent {agent.__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run the agent (under systemd, or by hand)")
    serve.add_argument("--config", help=f"YAML config (default {DEFAULT_CONFIG} when it exists, "
                       "else built-in defaults); FILE's conf.d/*.yaml is merged over it")
    serve.add_argument("--socket", help="bind this Unix socket (ignored when socket-activated)")
    serve.add_argument("--state-dir", help="override state_dir (hold, run history)")
    serve.add_argument("--run-dir", help="override run_dir (job locks)")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    check = sub.add_parser("check-config", help="validate a config; print the effective one")
    check.add_argument("--config", help=f"YAML config to check (default {DEFAULT_CONFIG})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vm-agent`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.cmd == "serve":
        return _serve(args)
    return _check_config(args)


if __name__ == "__main__":
    sys.exit(main())
