"""The Unix-socket site: a bound on connections and on slow clients, peer credentials.

aiohttp has neither a connection limit nor a request-header timeout, so each
connection's protocol is wrapped:

- over ``max_connections`` live connections, a new one gets one
  ``429 rate_limited`` envelope and is closed;
- a connection that has not *started* a request within ``client_timeout_s``
  of connecting (or of its previous response) is closed: this bounds slow
  headers (slowloris) and idle keep-alive; the body is bounded by the server
  with the same figure.  A connection whose reply is still unsent then (the
  client stopped reading) is aborted, since a close would wait for it.  The
  timer is per connection, not per request: a request only marks the
  connection busy and then idle again (two attribute writes), and the timer,
  when it fires, closes the connection or re-arms itself for what is left;
- the peer's ``SO_PEERCRED`` is read once per connection (the server caches
  the peer's role beside it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.api.access import Peer, Role, peer_of

log = logging.getLogger("vm-agent")


def _busy_response(request_id: str) -> bytes:
    body = json.dumps({"ok": False, "request_id": request_id, "error": {
        "code": "rate_limited", "message": "too many connections; retry shortly",
        "details": {"retry_after_s": 1}}}).encode()
    head = (f"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class _Refuse(asyncio.Protocol):
    """Answers 429 and closes: the connection limit was reached.

    The close waits for the client's request (or 1 s) so a client that
    writes before it reads gets the answer rather than a broken pipe.
    """

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        request_id = uuid.uuid4().hex[:16]
        try:
            peer: Peer | None = peer_of(transport.get_extra_info("socket"),
                                        proc_root=self.guard.proc_root)
        except OSError:
            peer = None
        self.guard.on_refuse(peer, request_id)
        transport.write(_busy_response(request_id))
        asyncio.get_running_loop().call_later(1.0, transport.close)

    def data_received(self, data: bytes) -> None:
        self._transport.close()


class GuardedConnection(asyncio.Protocol):
    """Delegates to aiohttp's RequestHandler; adds the start-of-request timer and the peer.

    The server calls :meth:`request_started` and :meth:`request_done` around
    each request; ``role`` is a slot the server fills once per connection.
    """

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.peer: Peer | None = None
        self.peer_error: str | None = None
        self.role: Role | None = None
        self.busy = False
        self.served = False  # a request has started on it
        self.idle_since = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._read_peer(transport)
        self.guard.accepted(transport, self)
        self.request_done(time.monotonic())
        self._arm(self.guard.client_timeout_s)
        self.inner.connection_made(transport)

    def _read_peer(self, transport: asyncio.Transport) -> None:
        sock = transport.get_extra_info("socket")
        try:
            self.peer = peer_of(sock, proc_root=self.guard.proc_root)
        except OSError as exc:  # no credentials (not AF_UNIX?): the request will be refused
            self.peer_error = str(exc)

    def request_started(self) -> None:
        """A request's headers have arrived: the timer leaves the connection alone."""
        self.busy = self.served = True

    def request_done(self, now: float) -> None:
        """The reply is written (``now``: ``time.monotonic()``); the next request must
        start within ``client_timeout_s`` of it."""
        self.busy = False
        self.idle_since = now

    def _arm(self, delay_s: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._expire)

    def disarm(self) -> None:
        """Stop the timer (the connection is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._transport is None or self._transport.is_closing():
            return
        timeout_s = self.guard.client_timeout_s
        left = self.idle_since + timeout_s - time.monotonic()
        if self.busy or left > 0:  # a request is running (its body has its own bound)
            self._arm(timeout_s if self.busy else left)
            return
        if self._transport.get_write_buffer_size():
            # a reply is still unsent: the client stopped reading.  close() would wait
            # for the buffer to drain, i.e. forever, and keep the connection counted
            log.info("aborting a connection that read no reply within %.1f s", timeout_s)
            self._transport.abort()
            return
        log.info("closing a connection that sent no request within %.1f s", timeout_s)
        self._transport.close()

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def last_request(self) -> bool:
        """True when the client has shut down its sending side and no further request of
        it is queued: the reply being made is its last, and the connection closes after it."""
        inner = self.inner
        return isinstance(inner, _AgentRequestHandler) and inner.client_done and not inner.queued()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self._transport is not None:
            self.guard.live.pop(self._transport, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ConnectionGuard:
    """Counts live connections and finds a request's :class:`GuardedConnection`."""

    def __init__(self, *, max_connections: int, client_timeout_s: float,
                 proc_root: str = "/proc") -> None:
        self.max_connections = max_connections
        self.client_timeout_s = client_timeout_s
        self.proc_root = proc_root
        self.live: dict[asyncio.BaseTransport, GuardedConnection] = {}
        #: connections accepted (protocol made) whose ``connection_made`` has not run yet:
        #: asyncio accepts a burst of connections before any of them is made
        self.starting = 0
        #: called with (peer, request_id) for each refused connection (the server audits it)
        self.on_refuse: Callable[[Peer | None, str], None] = lambda peer, rid: None

    def factory(self, inner_factory: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            if len(self.live) + self.starting >= self.max_connections:
                log.warning("connection limit %d reached; refusing a connection",
                            self.max_connections)
                return _Refuse(self)
            self.starting += 1
            return GuardedConnection(inner_factory(), self)
        return make

    def accepted(self, transport: asyncio.BaseTransport, conn: GuardedConnection) -> None:
        """``conn`` (counted as starting since :meth:`factory` made it) is now live."""
        self.starting = max(0, self.starting - 1)
        self.live[transport] = conn

    async def first_requests(self, grace_s: float) -> None:
        """Wait (at most ``grace_s`` seconds) until every accepted connection that has not
        started a request yet has started one.

        On a stop, once nothing more is accepted: a client whose connection was
        accepted just before its request bytes arrived is then answered rather
        than closed as idle (the e2e restart test lost one such request in ~60).
        """
        deadline = time.monotonic() + grace_s
        while self.starting or any(not c.served for c in self.live.values()):
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.01)

    def connection_of(self, request: web.BaseRequest) -> GuardedConnection | None:
        transport = request.transport
        return self.live.get(transport) if transport is not None else None


#: answers a request aiohttp could not parse: (request, HTTP status, the parser's error)
MalformedHandler = Callable[[web.BaseRequest, int, BaseException | None], web.StreamResponse]


class _AgentRequestHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, with the agent's answer to unparsable requests.

    aiohttp answers a request it cannot parse (bad request line, header too
    long, bad chunk, Content-Length with Transfer-Encoding, ...) with its own
    plain-text 400 that echoes the bytes; the agent answers with the envelope
    and audits it (:meth:`agent.api.server.Dispatcher.malformed`).
    """

    __slots__ = ("_on_malformed", "client_done")

    def __init__(self, manager: web.Server, on_malformed: MalformedHandler,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._on_malformed = on_malformed
        self.client_done = False

    def eof_received(self) -> bool:  # type: ignore[override]
        """The client shut down its sending side (``socat`` and ``nc -N`` do once their
        input ends).  The requests it sent whole are still answered, the last one with
        ``Connection: close``; with none pending, or one cut short, the connection closes
        now, as asyncio does by default (a request cut short ends ``client_disconnected``).

        Decided on the next loop pass, when a request parsed just before has started.
        """
        self.client_done = True
        self._loop.call_soon(self._close_unless_answering)
        return True  # keep the transport open for writing

    def queued(self) -> bool:
        """True when a parsed request waits for its turn on this connection."""
        return bool(getattr(self, "_messages", None))

    def _close_unless_answering(self) -> None:
        if self.transport is None:
            return
        request = getattr(self, "_current_request", None)
        whole = request is None or request.content.is_eof()  # None: its reply is being sent
        if self.queued() or (getattr(self, "_request_in_progress", False) and whole):
            return
        self.transport.close()

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # a reply is half sent: aiohttp gives up
            return super().handle_error(request, status, exc, message)
        return self._on_malformed(request, status, exc)


class AgentServer(web.Server):
    """aiohttp's low-level server whose connections answer unparsable requests with
    ``on_malformed`` (``handler_kwargs``: :class:`aiohttp.web.RequestHandler`'s options)."""

    def __init__(self, handler: Any, *, on_malformed: MalformedHandler,
                 loop: asyncio.AbstractEventLoop, handler_kwargs: dict[str, Any],
                 **kwargs: Any) -> None:
        super().__init__(handler, loop=loop, **kwargs)
        self._agent_loop = loop
        self._on_malformed = on_malformed
        self._handler_kwargs = handler_kwargs

    def __call__(self) -> web.RequestHandler:
        return _AgentRequestHandler(self, self._on_malformed, loop=self._agent_loop,
                                    **self._handler_kwargs)


class GuardedUnixSite(web.SockSite):
    """``web.SockSite`` on an already bound (or systemd-given) AF_UNIX socket, guarded."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, guard: ConnectionGuard,
                 **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_unix_server(
            self._guard.factory(server), sock=self._sock, backlog=self._backlog)
