"""The protocol server: aiohttp's low-level server and one dispatcher for every request.

Per request, in this order (PROTOCOL.md): identify the peer
(``SO_PEERCRED``, read once per connection) and its role (a peer in no role
gets 403 for everything, unknown routes included, so it cannot map the API);
match the route against the registry (404/405 otherwise, before anything is
read); 403 when the role may not run the command; read the body within the
size limit (413) and the client timeout; parse and validate parameters (400
naming the field); run the handler; wrap the result in the envelope.  Every
outcome is audited once (:meth:`agent.audit.Auditor.request`: written right
after the reply).  Errors are translated to the wire here and nowhere else
(:mod:`agent.api.envelope`); an unexpected exception becomes ``internal``
with its traceback in the journal only.

There is no ``web.Application``: routes without parameters are one dict
lookup, the others go through aiohttp's ``UrlDispatcher`` (which also gives
404 and 405 with the allowed methods), and no middleware chain is built.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

from agent.api.access import AccessPolicy, Peer, Role, may_run
from agent.api.envelope import (
    MAX_BODY_BYTES,
    ClientGone,
    envelope_error,
    envelope_ok,
    http_error,
    request_params,
)
from agent.api.params import parse_params
from agent.api.registry import Call, Command
from agent.api.transport import AgentServer, ConnectionGuard, GuardedConnection
from agent.audit import AuditEvent, Auditor
from agent.errors import AgentError, BadRequest, Forbidden, Internal

log = logging.getLogger("vm-agent")

_NO_PEER = Peer(pid=None, uid=-1, gid=-1)
_NO_MATCH: Mapping[str, str] = {}


class _Outcome:
    """What the audit entry of one request records."""

    __slots__ = ("args", "command", "peer", "result", "role")

    def __init__(self) -> None:
        self.command = "unknown"
        self.peer = _NO_PEER
        self.role: Role = "none"
        self.result = "ok"
        self.args: Mapping[str, Any] = _NO_MATCH


class InFlight:
    """Counts requests being handled, so a graceful stop can wait for them to finish."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False  # set when the daemon stops: replies close their connection
        self._idle: asyncio.Future[None] | None = None

    def enter(self) -> None:
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no request is in flight; False when ``timeout_s`` passed first."""
        self.draining = True
        if self.count == 0:
            return True
        self._idle = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._idle)
        except TimeoutError:
            return False
        return True


@dataclass(frozen=True)
class ServerState:
    services: Any
    policy: AccessPolicy
    auditor: Auditor
    guard: ConnectionGuard
    inflight: InFlight = field(default_factory=InFlight)


_RID_PREFIX = os.urandom(4).hex()  # per process: ids stay unique across restarts
_RID_COUNTER = itertools.count(1)


def _request_id(request: web.BaseRequest) -> str:
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 64 and given.isascii() and given.replace("-", "").isalnum():
        return given
    return f"{_RID_PREFIX}{next(_RID_COUNTER):08x}"


async def _unreachable(request: web.Request) -> web.StreamResponse:
    raise AssertionError("the dispatcher answers every request; routes only match")


class Dispatcher:
    """The one request handler of the low-level server (see the module docstring)."""

    def __init__(self, commands: Iterable[Command], state: ServerState) -> None:
        self.state = state
        self._static: dict[str, dict[str, Command]] = {}
        self._by_route: dict[web.AbstractRoute, Command] = {}
        self._router = web.UrlDispatcher()
        for cmd in commands:
            self._by_route[self._router.add_route(cmd.method, cmd.route, _unreachable)] = cmd
            if "{" not in cmd.route:
                self._static.setdefault(cmd.route, {})[cmd.method] = cmd
        self._router.freeze()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request with an envelope; audit it once, whatever happens.

        Every exception becomes an error envelope, but for a client that went
        away (nobody is left to answer; audited as ``client_disconnected``).
        """
        st, started, out = self.state, time.monotonic(), _Outcome()
        rid = _request_id(request)
        conn = st.guard.connection_of(request)
        if conn is not None:
            conn.request_started()
        st.inflight.enter()
        try:
            resp = await self._run(request, conn, out, rid)
        except AgentError as err:
            out.result = err.code
            resp = envelope_error(err, rid)
            if err.code in ("bad_request", "payload_too_large"):
                resp.force_close()  # the rest of a refused body must not be read as a request
        except asyncio.CancelledError:
            out.result = "cancelled"  # a stop that outlasted server.shutdown_timeout_s
            raise
        except ClientGone as exc:
            out.result = "client_disconnected"
            log.info("client went away during request %s: %s", rid, exc)
            raise web.HTTPBadRequest() from None
        except Exception:
            out.result = "internal"
            log.exception("internal error in %s (request %s)", out.command, rid)
            resp = envelope_error(Internal("internal error; see the agent's journal",
                                           {"request_id": rid}), rid)
        finally:
            st.inflight.leave()
            done = time.monotonic()
            st.auditor.request(AuditEvent(
                out.command, out.peer.uid, out.peer.gid, out.peer.pid, out.role, out.result,
                rid, round((done - started) * 1000, 3), out.args))
            if conn is not None:
                conn.request_done(done)
        if st.inflight.draining or (conn is not None and conn.last_request()):
            resp.force_close()  # stopping, or the client sends no more: close after this
        return resp

    async def _run(self, request: web.BaseRequest, conn: GuardedConnection | None,
                   out: _Outcome, rid: str) -> web.Response:
        out.peer, out.role = self._identify(conn)
        if out.role == "none":
            out.args = {"method": request.method, "path": request.path[:256]}
            raise Forbidden("this peer has no role on this agent (see access in the config)",
                            {"role": "none"})
        cmd, match = await self._route(request, out)
        out.command = cmd.name
        if not may_run(out.role, cmd.role):
            raise Forbidden(f"role {out.role!r} may not run {cmd.name} (needs {cmd.role})",
                            {"role": out.role, "needs": cmd.role})
        raw, query_keys = await request_params(request, match, self.state.guard.client_timeout_s)
        out.args = raw
        params: Any = parse_params(cmd.params, raw, query_keys=query_keys)
        data = await cmd.handler(Call(self.state.services, out.peer, out.role, rid, params))
        return envelope_ok(data, rid)

    def malformed(self, request: web.BaseRequest, status: int,
                  exc: BaseException | None) -> web.StreamResponse:
        """The envelope for a request aiohttp could not parse (``status`` 400), audited once.

        A peer in no role gets 403 here too.  The reply names the parser's
        complaint without echoing the client's bytes, and closes the connection.
        """
        out, rid = _Outcome(), _request_id(request)
        out.peer, out.role = self._identify(self.state.guard.connection_of(request))
        reason = _parser_complaint(exc)
        out.args = {"error": reason}
        err: AgentError
        if out.role == "none":
            err = Forbidden("this peer has no role on this agent (see access in the config)",
                            {"role": "none"})
        elif status == 400:
            err = BadRequest("request", f"malformed HTTP request: {reason}")
        else:  # aiohttp caught what the dispatcher let through: never expected
            log.error("HTTP %d from aiohttp (request %s)", status, rid, exc_info=exc)
            err = Internal("internal error; see the agent's journal", {"request_id": rid})
        out.result = err.code
        self.state.auditor.request(AuditEvent(
            out.command, out.peer.uid, out.peer.gid, out.peer.pid, out.role, out.result,
            rid, 0.0, out.args))
        resp = envelope_error(err, rid)
        resp.force_close()
        return resp

    def _identify(self, conn: GuardedConnection | None) -> tuple[Peer, Role]:
        if conn is None or conn.peer is None:
            return _NO_PEER, "none"
        if conn.role is None:  # once per connection: the policy is fixed at start-up
            conn.role = self.state.policy.role_of(conn.peer)
        return conn.peer, conn.role

    async def _route(self, request: web.BaseRequest,
                     out: _Outcome) -> tuple[Command, Mapping[str, str]]:
        # the raw target (no query, no %-escape) equals a plain route: one lookup; anything
        # else (a query, escapes, dot segments, parameters) goes through aiohttp's router
        methods = self._static.get(request.raw_path)
        if methods is not None and (cmd := methods.get(request.method)) is not None:
            return cmd, _NO_MATCH
        info = await self._router.resolve(cast(web.Request, request))
        if info.http_exception is not None:
            out.args = {"method": request.method, "path": request.path[:256]}
            raise http_error(info.http_exception, request)
        return self._by_route[info.route], info


def _parser_complaint(exc: BaseException | None) -> str:
    # aiohttp's messages are "<what>:\n<the offending bytes>"; keep the what only
    text = getattr(exc, "message", None) or (str(exc) if exc is not None else "")
    return str(text).split(":", 1)[0].strip()[:120] or "unparsable request"


def _audit_refused(state: ServerState, peer: Peer | None, request_id: str) -> None:
    role: Role = state.policy.role_of(peer) if peer is not None else "none"
    peer = peer or _NO_PEER
    state.auditor.request(AuditEvent("connection", peer.uid, peer.gid, peer.pid, role,
                                     "rate_limited", request_id, 0.0))


class AgentRunner(web.ServerRunner):
    """aiohttp's low-level runner for the agent; ``state`` is the server's state.

    Its cleanup (after aiohttp closed the connections) writes the audit
    entries still queued.
    """

    __slots__ = ("state",)

    def __init__(self, server: web.Server, state: ServerState, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self.state = state

    async def _cleanup_server(self) -> None:
        await super()._cleanup_server()
        self.state.auditor.flush()


def make_runner(commands: Iterable[Command], state: ServerState, *,
                shutdown_timeout: float = 60.0) -> AgentRunner:
    """The runner serving ``commands`` (one registry row each); call it in a running loop.

    ``shutdown_timeout`` is aiohttp's: seconds :meth:`AgentRunner.cleanup`
    gives requests still running before it cancels them.
    """
    loop = asyncio.get_running_loop()
    make_request = functools.partial(web.Request, loop=loop, client_max_size=MAX_BODY_BYTES)
    dispatcher = Dispatcher(commands, state)
    server = AgentServer(dispatcher.handle, on_malformed=dispatcher.malformed,
                         request_factory=make_request, loop=loop, handler_kwargs={
                             "access_log": None,
                             "keepalive_timeout": state.guard.client_timeout_s})
    state.guard.on_refuse = lambda peer, rid: _audit_refused(state, peer, rid)
    return AgentRunner(server, state, handle_signals=False, shutdown_timeout=shutdown_timeout)
