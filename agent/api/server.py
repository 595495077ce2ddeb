"""The protocol server: the registry as routes, one middleware for everything else.

Per request, in this order (PROTOCOL.md): identify the peer
(``SO_PEERCRED``) and its role (a peer in no role gets 403 for everything,
unknown routes included, so it cannot map the API); match the route against
the registry (404/405 otherwise, before anything is read); 403 when the role
may not run the command;
read the body within the size limit (413) and the client timeout; parse and
validate parameters (400 naming the field); run the handler; wrap the result
in the envelope.  Every outcome is audited once.  Errors are translated to
the wire here and nowhere else; an unexpected exception becomes ``internal``
with its traceback in the journal only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from agent.api.access import AccessPolicy, Peer, Role, may_run
from agent.api.params import parse_params
from agent.api.registry import Call, Command, RawJSON
from agent.api.transport import ConnectionGuard
from agent.audit import AuditEvent, Auditor
from agent.errors import (
    AgentError,
    BadRequest,
    Forbidden,
    Internal,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)

log = logging.getLogger("vm-agent")

MAX_BODY_BYTES = 64 * 1024  # PROTOCOL.md: request bodies are at most 64 KiB
_NO_PEER = Peer(pid=None, uid=-1, gid=-1)

STATE_KEY = web.AppKey("state", object)


@dataclass
class _Outcome:
    """What the audit entry of one request records."""

    command: str = "unknown"
    peer: Peer = _NO_PEER
    role: Role = "none"
    result: str = "ok"
    args: dict[str, Any] = field(default_factory=dict)


class InFlight:
    """Counts requests being handled, so a graceful stop can wait for them to finish."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False  # set when the daemon stops: replies close their connection
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no request is in flight; False when ``timeout_s`` passed first."""
        self.draining = True
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
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


def envelope_ok(data: Any, request_id: str) -> web.Response:
    if isinstance(data, RawJSON):  # pre-encoded: splice it in rather than encode it again
        body = f'{{"ok":true,"data":{data},"request_id":{json.dumps(request_id)}}}'
        return web.Response(status=200, text=body, content_type="application/json",
                            headers={"Server": "vm-agent"})
    return _json(200, {"ok": True, "data": data, "request_id": request_id})


def envelope_error(err: AgentError, request_id: str) -> web.Response:
    resp = _json(err.http_status, {"ok": False, "error": err.to_wire(),
                                   "request_id": request_id})
    if isinstance(err, MethodNotAllowed):
        resp.headers["Allow"] = ", ".join(err.details.get("allowed", ()))
    return resp


def _json(status: int, payload: dict[str, Any]) -> web.Response:
    body = json.dumps(payload, separators=(",", ":"), default=str)
    return web.Response(status=status, text=body, content_type="application/json",
                        headers={"Server": "vm-agent"})


class ClientGone(Exception):
    """The client closed the connection before its request was complete."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise BadRequest(key[:64], f"{key[:64]!r} appears twice in the JSON body")
        seen[key] = value
    return seen


_RID_PREFIX = os.urandom(4).hex()  # per process: ids stay unique across restarts
_RID_COUNTER = itertools.count(1)


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 64 and given.replace("-", "").isalnum():
        return given
    return f"{_RID_PREFIX}{next(_RID_COUNTER):08x}"


def _http_error(exc: web.HTTPException, request: web.Request) -> AgentError:
    if exc.status == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}",
                                {"allowed": sorted(getattr(exc, "allowed_methods", ()))})
    if exc.status == 404:
        return NotFound(f"no command {request.method} {request.path}")
    if exc.status == 413:
        return PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes",
                               {"limit_bytes": MAX_BODY_BYTES})
    return BadRequest("request", exc.reason or "bad request")


async def _read_body(request: web.Request, timeout_s: float) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes",
                              {"limit_bytes": MAX_BODY_BYTES})
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise BadRequest("body", f"request body not received within {timeout_s} s") from None
    except (ConnectionError, aiohttp.ClientConnectionResetError) as exc:
        raise ClientGone(str(exc)) from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes",
                              {"limit_bytes": MAX_BODY_BYTES}) from None
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, object_pairs_hook=_reject_duplicates)
    except BadRequest:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("body", f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "the body must be a JSON object")
    return body


def _merge(request: web.Request, body: dict[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    query: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        if len(values) > 1:
            raise BadRequest(key, f"{key} given more than once")
        if key in request.match_info:
            raise BadRequest(key, f"{key} is part of the path; it cannot be given again")
        query[key] = values[0]
    raw: dict[str, Any] = {**dict(request.match_info), **query}
    for key, value in body.items():
        if key in raw:
            raise BadRequest(key, f"{key} given in both the body and the URL")
        raw[key] = value
    return raw, frozenset(query) | frozenset(request.match_info)


async def _run(request: web.Request, st: ServerState, out: _Outcome, rid: str) -> web.Response:
    conn = st.guard.connection_of(request)
    out.peer = conn.peer if conn is not None and conn.peer is not None else _NO_PEER
    out.role = st.policy.role_of(out.peer) if out.peer is not _NO_PEER else "none"
    if out.role == "none":
        out.args = {"method": request.method, "path": request.path[:256]}
        raise Forbidden("this peer has no role on this agent (see access in the config)",
                        {"role": "none"})
    if request.match_info.http_exception is not None:
        out.args = {"method": request.method, "path": request.path[:256]}
        raise _http_error(request.match_info.http_exception, request)
    cmd = _command_of(request)
    out.command = cmd.name
    if not may_run(out.role, cmd.role):
        raise Forbidden(f"role {out.role!r} may not run {cmd.name} (needs {cmd.role})",
                        {"role": out.role, "needs": cmd.role})
    body = await _read_body(request, st.guard.client_timeout_s)
    raw, query_keys = _merge(request, body)
    out.args = raw
    params: Any = parse_params(cmd.params, raw, query_keys=query_keys)
    data = await cmd.handler(Call(st.services, out.peer, out.role, rid, params))
    return envelope_ok(data, rid)


def _command_of(request: web.Request) -> Command:
    handler = request.match_info.handler
    cmd: Command = getattr(handler, "vmagent_command")  # noqa: B009 - set by make_app
    return cmd


@web.middleware
async def _middleware(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                      ) -> web.StreamResponse:
    st: ServerState = request.app[STATE_KEY]  # type: ignore[assignment]
    started, rid, out = time.monotonic(), _request_id(request), _Outcome()
    conn = st.guard.connection_of(request)
    if conn is not None:
        conn.disarm()
    st.inflight.enter()
    try:
        resp = await _answer(request, st, out, rid)
        if st.inflight.draining:
            resp.force_close()  # stopping: no further request on this connection
        return resp
    finally:
        st.inflight.leave()
        _audit(st, out, rid, started)
        if conn is not None:
            conn.arm()


async def _answer(request: web.Request, st: ServerState, out: _Outcome,
                  rid: str) -> web.Response:
    """The envelope for one request; every exception becomes an error envelope."""
    try:
        return await _run(request, st, out, rid)
    except AgentError as err:
        out.result = err.code
        resp = envelope_error(err, rid)
        if err.code in ("bad_request", "payload_too_large"):
            resp.force_close()  # the rest of a refused body must not be read as a request
        return resp
    except ClientGone as exc:
        out.result = "client_disconnected"  # audit only: nobody is left to answer
        log.info("client went away during request %s: %s", rid, exc)
        raise web.HTTPBadRequest() from None
    except Exception:
        out.result = "internal"
        log.exception("internal error in %s (request %s)", out.command, rid)
        return envelope_error(Internal("internal error; see the agent's journal",
                                       {"request_id": rid}), rid)


def _audit(st: ServerState, out: _Outcome, rid: str, started: float) -> None:
    st.auditor.audit(AuditEvent(
        command=out.command, peer_uid=out.peer.uid, peer_gid=out.peer.gid,
        peer_pid=out.peer.pid, role=out.role, result=out.result, request_id=rid,
        duration_ms=round((time.monotonic() - started) * 1000, 3), args=out.args))


def _audit_refused(state: ServerState, peer: Peer | None, request_id: str) -> None:
    role: Role = state.policy.role_of(peer) if peer is not None else "none"
    out = _Outcome(command="connection", peer=peer or _NO_PEER, role=role,
                   result="rate_limited")
    _audit(state, out, request_id, time.monotonic())


def make_app(commands: Iterable[Command], state: ServerState) -> web.Application:
    """The aiohttp application: one route per registry row, behind the middleware."""
    app = web.Application(middlewares=[_middleware], client_max_size=MAX_BODY_BYTES,
                          handler_args={"keepalive_timeout": state.guard.client_timeout_s})
    app[STATE_KEY] = state
    state.guard.on_refuse = lambda peer, rid: _audit_refused(state, peer, rid)
    for cmd in commands:
        app.router.add_route(cmd.method, cmd.route, _route_handler(cmd))
    return app


def _route_handler(cmd: Command) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def route(request: web.Request) -> web.StreamResponse:  # never reached: middleware
        raise AssertionError("the middleware answers every request")
    route.vmagent_command = cmd  # type: ignore[attr-defined]
    return route
