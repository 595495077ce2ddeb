"""The low-level dispatcher over a real socket: routes, headers, one entry each, timers, drain."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.protocol.conftest import Agent, start_agent

Reply = tuple[int, dict[str, str], dict[str, Any]]


def _read_reply(sock: socket.socket, buf: bytearray) -> Reply:
    """One response from ``sock`` (by Content-Length); leftovers stay in ``buf``."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-response"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int(headers["Content-Length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        rest += chunk
    del buf[:len(head) + 4 + length]
    return int(lines[0].split()[1]), headers, json.loads(rest[:length])


def _keep_alive(path: str, targets: list[str], *, pause_s: float = 0.0) -> list[Reply]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        buf, replies = bytearray(), []
        for target in targets:
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            replies.append(_read_reply(s, buf))
            time.sleep(pause_s)
    return replies


def _entries(agent: Agent, request_id: str) -> list[dict[str, Any]]:
    return [e for e in agent.audit_entries() if e.get("VMAGENT_REQUEST_ID") == request_id]


@pytest.mark.parametrize("target,status,code,command", [
    ("/v1/health", 200, None, "health"),             # a plain route: one dict lookup
    ("/v1/%68ealth", 200, None, "health"),           # escaped: through aiohttp's router
    ("/v1/./health", 404, "not_found", "unknown"),  # no dot-segment folding, as before
    ("/v1/health/", 404, "not_found", "unknown"),
    ("/v1/health?verbose=1", 400, "bad_request", "health"),
    ("/v1/runs/987654", 404, "not_found", "runs.get"),  # a route with a parameter
    ("/v1/runs/x", 400, "bad_request", "runs.get"),
])
async def test_every_path_form_answers_with_an_envelope_and_one_entry(
        agent_server: Agent, target: str, status: int, code: str | None, command: str) -> None:
    (got, headers, env), = await asyncio.to_thread(_keep_alive, agent_server.socket_path,
                                                    [target])
    assert got == status, env
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["Server"] == "vm-agent"
    assert env["ok"] is (code is None)
    if code is not None:
        assert env["error"]["code"] == code
    await asyncio.sleep(0)
    (entry,) = _entries(agent_server, env["request_id"])
    assert entry["VMAGENT_COMMAND"] == command
    assert entry["VMAGENT_RESULT"] == (code or "ok")


def _raw(path: str, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


async def test_head_is_405_with_allow(agent_server: Agent) -> None:
    data = b"HEAD /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = await asyncio.to_thread(_raw, agent_server.socket_path, data)
    head = raw.partition(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 405")
    assert "\r\nAllow: GET\r\n" in head
    await asyncio.sleep(0)
    (entry,) = agent_server.audit_entries()
    assert entry["VMAGENT_RESULT"] == "method_not_allowed"


async def test_keep_alive_requests_each_leave_one_entry(agent_server: Agent) -> None:
    targets = ["/v1/health", "/v1/version", "/v1/hold", "/v1/nope"] * 25
    replies = await asyncio.to_thread(_keep_alive, agent_server.socket_path, targets)
    ids = [env["request_id"] for _status, _headers, env in replies]
    assert len(set(ids)) == len(targets)
    await asyncio.sleep(0)
    entries = agent_server.audit_entries()
    assert sorted(e["VMAGENT_REQUEST_ID"] for e in entries) == sorted(ids)
    assert [s for s, _h, _e in replies].count(404) == 25


async def test_idle_keep_alive_is_closed_after_the_client_timeout(short_tmp: Path) -> None:
    agent, _runner, stopper = await start_agent(short_tmp, client_timeout_s=0.5)
    try:
        def idle_after_one() -> float:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(agent.socket_path)
                s.sendall(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _read_reply(s, bytearray())[0] == 200
                answered = time.monotonic()
                assert s.recv(100) == b""  # closed by the agent
                return time.monotonic() - answered
        took = await asyncio.to_thread(idle_after_one)
        assert 0.3 < took < 2
    finally:
        await stopper.stop()


async def test_a_busy_keep_alive_connection_outlives_the_client_timeout(short_tmp: Path) -> None:
    agent, _runner, stopper = await start_agent(short_tmp, client_timeout_s=0.5)
    try:
        started = time.monotonic()
        replies = await asyncio.to_thread(_keep_alive, agent.socket_path, ["/v1/version"] * 8,
                                          pause_s=0.2)
        assert time.monotonic() - started > 1.5  # three timeouts, on one connection
        assert [status for status, _h, _e in replies] == [200] * 8
    finally:
        await stopper.stop()


async def test_a_request_running_longer_than_the_timeout_is_not_cut(short_tmp: Path) -> None:
    agent, _runner, stopper = await start_agent(short_tmp, client_timeout_s=0.3)
    reader, writer = await asyncio.open_unix_connection(agent.socket_path)
    try:
        await asyncio.sleep(0.05)
        (conn,) = agent.guard.live.values()
        conn.request_started()  # as the server does when headers arrive
        await asyncio.sleep(1.0)  # three timeouts while "busy"
        assert not writer.transport.is_closing()
        conn.request_done(time.monotonic())
        async with asyncio.timeout(2):
            assert await reader.read() == b""  # idle again: closed after the timeout
    finally:
        writer.close()
        await stopper.stop()


async def test_stop_drains_a_request_in_flight_and_closes_its_connection(
        short_tmp: Path) -> None:
    agent, runner, stopper = await start_agent(short_tmp, client_timeout_s=5)
    try:
        reader, writer = await asyncio.open_unix_connection(agent.socket_path)
        writer.write(b"PUT /v1/hold HTTP/1.1\r\nHost: x\r\nContent-Length: 22\r\n\r\n{\"reason\": ")
        for _ in range(100):
            if runner.state.inflight.count == 1:
                break
            await asyncio.sleep(0.01)
        assert runner.state.inflight.count == 1  # waiting for the rest of its body
        drained = asyncio.create_task(runner.state.inflight.drained(5))
        await asyncio.sleep(0.1)
        assert not drained.done()
        writer.write(b'"stopping"}')
        async with asyncio.timeout(5):
            raw = await reader.read()  # the reply, then the close (draining)
        assert await drained is True
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Connection: close" in head
        rid = json.loads(body)["request_id"]
        writer.close()
    finally:
        await stopper.stop()
    (entry,) = _entries(agent, rid)
    assert entry["VMAGENT_COMMAND"] == "hold.set"
