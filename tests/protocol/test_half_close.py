"""A client that shuts down its sending side after its request (``socat``, ``nc -N``).

It is still answered, once per request it sent whole, and the agent then closes;
a request cut short is ``client_disconnected`` and changes nothing; with no
request at all the connection closes at once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

from agent.hold import HoldStore
from tests.protocol.conftest import Agent

Replies = tuple[list[tuple[int, dict[str, Any]]], float]


def _half_close(path: str, data: bytes) -> Replies:
    """Send ``data``, shut down writing, read until the agent closes: every reply
    (status, envelope) and the seconds from the shutdown to the close."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        shut, raw = time.monotonic(), b""
        while chunk := s.recv(65536):
            raw += chunk
        return _split(raw), time.monotonic() - shut


def _split(raw: bytes) -> list[tuple[int, dict[str, Any]]]:
    replies = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = int(next(v for k, _, v in (line.partition(": ") for line in lines[1:])
                          if k.lower() == "content-length"))
        replies.append((int(lines[0].split()[1]), json.loads(rest[:length])))
        raw = rest[length:]
    return replies


async def _results(agent: Agent, count: int) -> list[str]:
    for _ in range(50):
        if len(entries := agent.audit_entries()) >= count:
            return [e["VMAGENT_RESULT"] for e in entries]
        await asyncio.sleep(0.05)
    return [e["VMAGENT_RESULT"] for e in agent.audit_entries()]


async def test_a_get_then_half_close_is_answered_and_closed(agent_server: Agent) -> None:
    data = b"GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n"
    replies, took = await asyncio.to_thread(_half_close, agent_server.socket_path, data)
    assert [(status, env["ok"]) for status, env in replies] == [(200, True)]
    assert took < 2  # closed after the reply, not at the keep-alive timeout
    assert await _results(agent_server, 1) == ["ok"]


async def test_a_put_with_its_whole_body_then_half_close_is_done(agent_server: Agent) -> None:
    body = b'{"reason": "disk swap"}'
    data = (b"PUT /v1/hold HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)
    replies, _took = await asyncio.to_thread(_half_close, agent_server.socket_path, data)
    assert [status for status, _env in replies] == [200]
    assert HoldStore(agent_server.state_dir).get().reason == "disk swap"
    assert await _results(agent_server, 1) == ["ok"]


async def test_pipelined_requests_then_half_close_are_all_answered(agent_server: Agent) -> None:
    data = b"".join(f"GET {t} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                    for t in ("/v1/version", "/v1/hold", "/v1/nope"))
    replies, took = await asyncio.to_thread(_half_close, agent_server.socket_path, data)
    assert [status for status, _env in replies] == [200, 200, 404]
    assert took < 2
    assert sorted(await _results(agent_server, 3)) == ["not_found", "ok", "ok"]


async def test_half_close_without_a_request_closes_at_once(agent_server: Agent) -> None:
    for data in (b"", b"GET /v1/vers"):  # nothing, or headers cut short
        replies, took = await asyncio.to_thread(_half_close, agent_server.socket_path, data)
        assert replies == []
        assert took < 1


async def test_half_close_mid_body_changes_nothing(agent_server: Agent) -> None:
    data = b"PUT /v1/hold HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"reason\":"
    replies, took = await asyncio.to_thread(_half_close, agent_server.socket_path, data)
    assert replies == []
    assert took < 1
    assert await _results(agent_server, 1) == ["client_disconnected"]
    assert HoldStore(agent_server.state_dir).get().active is False
