"""A hostile or broken client against the real server: the envelope and one audit entry hold.

Each test speaks raw bytes on the agent's socket (the way a broken client,
a port scanner or a slowloris does) and counts the audit entries the
requests produced.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.protocol.conftest import (
    CLIENT_PYTHON,
    NOBODY_ROLE_UID,
    Agent,
    exchange,
    require_root,
    start_agent,
)

Reply = tuple[int, dict[str, str], bytes]


def _exchange(path: str, data: bytes, *, timeout_s: float = 5.0) -> bytes:
    return exchange(path, data, timeout=timeout_s)


def _parse(raw: bytes) -> list[Reply]:
    """Every HTTP reply in ``raw`` (Content-Length framed): status, headers, body."""
    replies: list[Reply] = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        if status == 100:
            raw = rest
            continue
        length = int(headers["content-length"])
        replies.append((status, headers, rest[:length]))
        raw = rest[length:]
    return replies


async def _send(agent: Agent, data: bytes) -> list[Reply]:
    return _parse(await asyncio.to_thread(_exchange, agent.socket_path, data))


async def _audits_after(agent: Agent, before: int) -> list[dict[str, Any]]:
    await asyncio.sleep(0.05)  # entries are written on the loop pass after the reply
    return agent.audit_entries()[before:]


def _request_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if "VMAGENT_REQUEST_ID" in e]


MALFORMED = {
    "garbage": b"\x00\x01\x02garbage\r\n\r\n",
    "http-version": b"GET /v1/health HTTP/9.9\r\nHost: x\r\n\r\n",
    "request-line-too-long": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-too-long": b"GET /v1/health HTTP/1.1\r\nX-A: " + b"b" * 9000 + b"\r\n\r\n",
    "length-and-chunked": (b"PUT /v1/hold HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n"
                           b'f\r\n{"reason":"hi"}\r\n0\r\n\r\n'),
    "bad-chunk-size": (b"PUT /v1/hold HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                       b"\r\nzz\r\nabc\r\n0\r\n\r\n"),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
async def test_unparsable_request_gets_the_envelope_and_one_audit_entry(
        agent_server: Agent, data: bytes) -> None:
    before = len(agent_server.audit_entries())
    replies = await _send(agent_server, data)
    assert len(replies) == 1
    status, headers, body = replies[0]
    assert status == 400
    assert headers["server"] == "vm-agent"
    assert headers["content-type"].startswith("application/json")
    env = json.loads(body)
    assert env["ok"] is False and env["error"]["code"] == "bad_request"
    assert env["error"]["message"].startswith("malformed HTTP request")
    assert b"aaaaaaaa" not in body and b"garbage" not in body  # the bytes are not echoed
    entries = await _audits_after(agent_server, before)
    assert len(entries) == 1
    assert entries[0]["VMAGENT_RESULT"] == "bad_request"
    assert entries[0]["VMAGENT_REQUEST_ID"] == env["request_id"]


_RAW_AS_USER = """
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
s.sendall(b"\\x00garbage\\r\\n\\r\\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.buffer.write(data)
"""


async def test_unparsable_request_from_a_peer_in_no_role_is_403(agent_server: Agent) -> None:
    require_root()
    before = len(agent_server.audit_entries())
    proc = await asyncio.create_subprocess_exec(
        CLIENT_PYTHON, "-c", _RAW_AS_USER, agent_server.socket_path, user=NOBODY_ROLE_UID,
        group=NOBODY_ROLE_UID, extra_groups=[], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd="/")
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    [(status, _, body)] = _parse(out)
    assert status == 403 and json.loads(body)["error"]["code"] == "forbidden"
    [entry] = await _audits_after(agent_server, before)
    assert entry["VMAGENT_ROLE"] == "none" and entry["VMAGENT_RESULT"] == "forbidden"
    assert entry["VMAGENT_PEER_UID"] == NOBODY_ROLE_UID


async def test_pipelined_requests_get_one_reply_and_one_entry_each(agent_server: Agent) -> None:
    before = len(agent_server.audit_entries())
    data = (b"GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /v1/nope HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /v1/hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await asyncio.to_thread(_exchange, agent_server.socket_path, data)
    # a HEAD reply has a Content-Length but no body: split on the status lines instead
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]
    assert statuses == [200, 404, 405, 200]
    entries = _request_entries(await _audits_after(agent_server, before))
    assert [e["VMAGENT_RESULT"] for e in entries] == [
        "ok", "not_found", "method_not_allowed", "ok"]
    assert len({e["VMAGENT_REQUEST_ID"] for e in entries}) == 4


async def test_chunked_body_over_64k_is_413_with_one_entry(agent_server: Agent) -> None:
    before = len(agent_server.audit_entries())
    chunk = b"x" * 8192
    body = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 9 + b"0\r\n\r\n"
    [(status, _, payload)] = await _send(
        agent_server, b"PUT /v1/hold HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + body)
    assert status == 413 and json.loads(payload)["error"]["code"] == "payload_too_large"
    [entry] = await _audits_after(agent_server, before)
    assert entry["VMAGENT_RESULT"] == "payload_too_large"


@pytest.mark.parametrize("given", ["ab\u00b2", "\u0663\u0663", "a b", "a" * 65, "x\"y"])
async def test_odd_request_ids_are_replaced(agent_server: Agent, given: str) -> None:
    """Only ``[A-Za-z0-9-]{1,64}`` is echoed (``str.isalnum`` alone lets ``²`` and
    Arabic-Indic digits through)."""
    data = (f"GET /v1/version HTTP/1.1\r\nHost: x\r\nX-Request-Id: {given}\r\n"
            f"Connection: close\r\n\r\n").encode()
    [(status, _, body)] = await _send(agent_server, data)
    assert status == 200
    rid = json.loads(body)["request_id"]
    assert rid != given and rid.isascii() and rid.replace("-", "").isalnum()


def _connect_many(path: str, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)  # completes in the kernel's backlog: the agent accepts them in a burst
        held.append(s)
    return held


def _answered(sockets: list[socket.socket]) -> list[bytes]:
    replies = []
    for s in sockets:
        s.setblocking(False)
        try:
            replies.append(s.recv(4096))
        except BlockingIOError:
            replies.append(b"")
    return replies


async def test_connection_limit_holds_for_a_burst(short_tmp: Path) -> None:
    """Connections that arrive together are accepted in one loop pass, before any of
    them is ``connection_made``: the limit must count them all the same."""
    agent, _runner, stopper = await start_agent(short_tmp, max_connections=3)
    held = _connect_many(agent.socket_path, 10)  # no await: the loop has not run yet
    try:
        await asyncio.sleep(0.3)
        replies = _answered(held)
        refused = [r for r in replies if r.startswith(b"HTTP/1.1 429")]
        assert len(agent.guard.live) <= 3
        assert len(refused) == 7
        entries = await _audits_after(agent, 0)
        assert [e["VMAGENT_RESULT"] for e in entries] == ["rate_limited"] * 7
    finally:
        for s in held:
            s.close()
        await stopper.stop()


async def _wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_client_that_stops_reading_is_dropped(short_tmp: Path) -> None:
    """Replies pile up unread: after client_timeout_s the connection must go, not wait
    forever for its send buffer to drain (and hold a connection slot meanwhile)."""
    agent, _runner, stopper = await start_agent(short_tmp, client_timeout_s=0.5)
    s = socket.socket(socket.AF_UNIX)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(agent.socket_path)
        s.setblocking(False)
        request = b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
        sent = 0
        with pytest.raises(BlockingIOError):  # until both directions' buffers are full
            for _ in range(2000):
                sent += s.send(request)
                await asyncio.sleep(0)
        assert await _wait_for(lambda: len(agent.guard.live) == 1, 2.0)
        assert await _wait_for(lambda: not agent.guard.live, 5.0), "connection still held"
        # every request the agent answered (or began) has exactly one entry
        entries = _request_entries(agent.audit_entries())
        assert 0 < len(entries) <= sent // len(request)
        assert len({e["VMAGENT_REQUEST_ID"] for e in entries}) == len(entries)
    finally:
        s.close()
        await stopper.stop()


async def test_idle_connections_up_to_the_limit_are_reaped(short_tmp: Path) -> None:
    agent, _runner, stopper = await start_agent(short_tmp, max_connections=4,
                                               client_timeout_s=0.5)
    held: list[socket.socket] = []
    try:
        for _ in range(4):
            held += _connect_many(agent.socket_path, 1)
            await asyncio.sleep(0.02)
        assert await _wait_for(lambda: len(agent.guard.live) == 4, 2.0)
        assert await _wait_for(lambda: not agent.guard.live, 3.0)
        assert _answered(held) == [b""] * 4  # closed without a reply: no request was made
        [(status, _, _)] = await _send(
            agent, b"GET /v1/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 200
    finally:
        for s in held:
            s.close()
        await stopper.stop()


