"""PROTOCOL.md over a real Unix socket: envelope, error codes, roles, limits, audit."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agent.api.commands import COMMANDS, openapi_document
from agent.api.openapi import openapi_path
from agent.hold import HoldStore
from tests.protocol.conftest import (
    NOBODY_ROLE_UID,
    VIEWER_UID,
    Agent,
    request,
    request_as,
    require_root,
    start_agent,
)

ERROR_KEYS = {"code", "message", "details"}


def assert_error(status: int, env: dict[str, Any], http_status: int, code: str) -> None:
    assert status == http_status, env
    assert env["ok"] is False
    assert set(env["error"]) == ERROR_KEYS
    assert env["error"]["code"] == code
    assert isinstance(env["request_id"], str) and env["request_id"]


def one_audit(agent: Agent, request_id: str) -> dict[str, Any]:
    entries = [e for e in agent.audit_entries() if e.get("VMAGENT_REQUEST_ID") == request_id]
    assert len(entries) == 1, agent.audit_entries()
    return entries[0]


async def test_unknown_route_is_404_with_envelope_and_audit(agent_server: Agent) -> None:
    status, env = await request(agent_server, "GET", "/v1/nope")
    assert_error(status, env, 404, "not_found")
    entry = one_audit(agent_server, env["request_id"])
    assert entry["VMAGENT_RESULT"] == "not_found"
    assert entry["VMAGENT_COMMAND"] == "unknown"
    assert entry["SYSLOG_IDENTIFIER"] == "vm-agent"


async def test_wrong_method_is_405(agent_server: Agent) -> None:
    status, env = await request(agent_server, "POST", "/v1/health", b"{}")
    assert_error(status, env, 405, "method_not_allowed")
    assert "GET" in env["error"]["details"]["allowed"]
    assert one_audit(agent_server, env["request_id"])["VMAGENT_RESULT"] == "method_not_allowed"


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", b'"reason"'])
async def test_bad_json_is_400(agent_server: Agent, body: bytes) -> None:
    status, env = await request(agent_server, "PUT", "/v1/hold", body)
    assert_error(status, env, 400, "bad_request")
    assert env["error"]["details"]["field"] == "body"
    assert one_audit(agent_server, env["request_id"])["VMAGENT_RESULT"] == "bad_request"
    assert HoldStore(agent_server.state_dir).get().active is False


async def test_body_over_64k_is_413_and_changes_nothing(agent_server: Agent) -> None:
    body = json.dumps({"reason": "x" * (64 * 1024)}).encode()
    status, env = await request(agent_server, "PUT", "/v1/hold", body)
    assert_error(status, env, 413, "payload_too_large")
    assert one_audit(agent_server, env["request_id"])["VMAGENT_RESULT"] == "payload_too_large"
    assert HoldStore(agent_server.state_dir).get().active is False


async def test_body_just_under_limit_is_read(agent_server: Agent) -> None:
    body = json.dumps({"reason": "x" * 500, "pad": "y" * 60000}).encode()
    assert len(body) < 64 * 1024
    status, env = await request(agent_server, "PUT", "/v1/hold", body)
    assert_error(status, env, 400, "bad_request")  # read, parsed, then refused by name
    assert env["error"]["details"]["field"] == "pad"


async def test_viewer_calling_operator_command_is_403(agent_server: Agent) -> None:
    require_root()
    status, env = await request_as(VIEWER_UID, agent_server, "PUT", "/v1/hold",
                                   '{"reason": "x"}')
    assert_error(status, env, 403, "forbidden")
    entry = one_audit(agent_server, env["request_id"])
    assert entry["VMAGENT_ROLE"] == "viewer"
    assert entry["VMAGENT_PEER_UID"] == VIEWER_UID
    assert entry["VMAGENT_COMMAND"] == "hold.set"
    assert HoldStore(agent_server.state_dir).get().active is False


async def test_viewer_may_read(agent_server: Agent) -> None:
    require_root()
    status, env = await request_as(VIEWER_UID, agent_server, "GET", "/v1/hold")
    assert status == 200 and env["ok"] is True
    assert env["data"]["active"] is False


async def test_peer_in_no_role_is_403_for_everything(agent_server: Agent) -> None:
    require_root()
    for method, path in (("GET", "/v1/health"), ("GET", "/v1/version"), ("DELETE", "/v1/hold"),
                         ("GET", "/v1/secret-probe"), ("PATCH", "/v1/hold")):
        status, env = await request_as(NOBODY_ROLE_UID, agent_server, method, path)
        assert_error(status, env, 403, "forbidden")
        entry = one_audit(agent_server, env["request_id"])
        assert entry["VMAGENT_ROLE"] == "none"
        assert entry["VMAGENT_PEER_UID"] == NOBODY_ROLE_UID
        assert entry["VMAGENT_PEER_PID"] > 1


async def test_root_is_operator_and_audit_has_every_field(agent_server: Agent) -> None:
    status, env = await request(agent_server, "PUT", "/v1/hold",
                                b'{"reason": "disk migration", "token_note": "x"}')
    assert_error(status, env, 400, "bad_request")  # unknown field named
    assert env["error"]["details"]["field"] == "token_note"
    entry = one_audit(agent_server, env["request_id"])
    for key in ("VMAGENT_COMMAND", "VMAGENT_PEER_UID", "VMAGENT_PEER_GID", "VMAGENT_PEER_PID",
                "VMAGENT_ROLE", "VMAGENT_RESULT", "VMAGENT_REQUEST_ID",
                "VMAGENT_DURATION_MS", "VMAGENT_ARGS"):
        assert key in entry, key
    assert entry["VMAGENT_ROLE"] == "operator"
    args = json.loads(entry["VMAGENT_ARGS"])
    assert args["reason"] == "disk migration"
    assert args["token_note"] == "***"  # secrets redacted


async def test_hold_set_get_clear_and_survives_restart(short_tmp: Path) -> None:
    agent, _runner, stopper = await start_agent(short_tmp)
    try:
        status, env = await request(agent, "PUT", "/v1/hold", b'{"reason": "migrating disks"}')
        assert status == 200 and env["data"]["active"] is True
        assert env["data"]["by"].startswith("uid=0 ")
        since = env["data"]["since"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", since)
    finally:
        await stopper.stop()
    agent, _runner, stopper = await start_agent(short_tmp)
    try:
        status, env = await request(agent, "GET", "/v1/hold")
        assert env["data"] == {"active": True, "reason": "migrating disks", "since": since,
                               "by": env["data"]["by"]}
        status, env = await request(agent, "DELETE", "/v1/hold")
        assert status == 200 and env["data"]["active"] is False
        assert env["data"]["lifted"]["reason"] == "migrating disks"
        status, env = await request(agent, "GET", "/v1/hold")
        assert env["data"]["active"] is False
    finally:
        await stopper.stop()


@pytest.mark.parametrize("body,field", [
    (b'{"reason": ""}', "reason"), (b'{"reason": "   "}', "reason"),
    (b'{"reason": "a\\nb"}', "reason"), (b'{"reason": 5}', "reason"), (b"{}", "reason"),
    (b'{"reason": null}', "reason"), (b'{"reason": "x \\u001b[2J"}', "reason"),
    (b'{"reason": "\\u0000"}', "reason"), (b'{"reason": "del\\u007f"}', "reason"),
    (b'{"reason": "csi \\u009b"}', "reason"), (b'{"reason": "rtl \\u202e"}', "reason"),
])
async def test_hold_reason_is_validated(agent_server: Agent, body: bytes, field: str) -> None:
    status, env = await request(agent_server, "PUT", "/v1/hold", body)
    assert_error(status, env, 400, "bad_request")
    assert env["error"]["details"]["field"] == field
    assert HoldStore(agent_server.state_dir).get().active is False


async def test_unknown_query_parameter_is_400(agent_server: Agent) -> None:
    status, env = await request(agent_server, "GET", "/v1/health?verbose=1")
    assert_error(status, env, 400, "bad_request")
    assert env["error"]["details"]["field"] == "verbose"


async def test_health_answers_a_full_sample(agent_server: Agent) -> None:
    status, env = await request(agent_server, "GET", "/v1/health")
    assert status == 200 and env["ok"] is True
    data = env["data"]
    assert set(data) >= {"sampled_at", "status", "levels", "cpu", "load", "memory", "disks",
                         "docker"}
    assert data["status"] in ("OK", "WARN", "CRIT")
    assert data["docker"]["available"] is False  # the fixture's Docker socket does not exist
    assert data["docker"]["error"]
    assert data["memory"]["total_bytes"] > 0
    assert 0 <= data["cpu"]["steal_percent"] <= 100


async def test_version(agent_server: Agent) -> None:
    status, env = await request(agent_server, "GET", "/v1/version")
    assert status == 200
    assert set(env["data"]) >= {"version", "uptime_s", "config_path", "config_digest",
                                "socket_activated"}
    assert env["data"]["socket_activated"] is False


async def test_client_request_id_is_echoed(agent_server: Agent) -> None:
    _status, env = await request(agent_server, "GET", "/v1/hold",
                                headers="X-Request-Id: dash-42\r\n")
    assert env["request_id"] == "dash-42"


async def test_connection_limit_refuses_with_429(short_tmp: Path) -> None:
    agent, _runner, stopper = await start_agent(short_tmp, max_connections=2)
    held = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX)
            s.connect(agent.socket_path)
            held.append(s)
        await asyncio.sleep(0.1)
        status, env = await request(agent, "GET", "/v1/version")
        assert_error(status, env, 429, "rate_limited")
        assert env["error"]["details"]["retry_after_s"] == 1
        assert one_audit(agent, env["request_id"])["VMAGENT_COMMAND"] == "connection"
        for s in held:
            s.close()
        await asyncio.sleep(0.1)
        status, env = await request(agent, "GET", "/v1/version")
        assert status == 200
    finally:
        for s in held:
            s.close()
        await stopper.stop()


async def test_slow_client_is_cut_off(short_tmp: Path) -> None:
    agent, _runner, stopper = await start_agent(short_tmp, client_timeout_s=0.5)
    try:
        def slow() -> float:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(agent.socket_path)
                s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # headers never end
                start = time.monotonic()
                assert s.recv(100) == b""  # closed by the agent
                return time.monotonic() - start
        took = await asyncio.to_thread(slow)
        assert 0.3 < took < 3
    finally:
        await stopper.stop()


PATH_SAMPLES = {"job": "selftest", "id": "1", "name": "web",  # {placeholders} -> a target
                "kind": "disk"}
#: Docker is absent here: these answer 503 upstream_unavailable (the 200 path is exercised
#: against the tests' own engine in tests/integration/test_containers_api.py).
NEEDS_DOCKER = frozenset({"containers.list", "containers.unhealthy", "containers.logs",
                          "containers.health", "containers.restart",
                          "containers.restart_unhealthy"})
#: Ollama is absent here (test_config points ollama.url at a closed port): 503 upstream
#: ollama (the 200 paths run against a stand-in in tests/integration/test_ollama.py).
NEEDS_OLLAMA = frozenset({"ollama.models", "ollama.loaded", "ollama.load_impact",
                          "ollama.load", "ollama.unload"})
#: prometheus.url is empty here: 503 upstream prometheus (the 200 paths run against a real
#: Prometheus in tests/integration/test_trends.py).
NEEDS_PROMETHEUS = frozenset({"metrics.trend"})


def _sample_params(name: str) -> tuple[bytes, str]:
    return {"hold.set": (b'{"reason": "registry walk"}', ""),
            "ollama.load_impact": (b"", "?model=m"), "ollama.load": (b'{"model": "m"}', ""),
            "ollama.unload": (b'{"model": "m"}', "")}.get(name, (b"", ""))


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c.name)
async def test_every_registered_command_answers(agent_server: Agent, cmd: Any) -> None:
    body, query = _sample_params(cmd.name)
    if cmd.name == "runs.get":  # run 1 must exist
        await request(agent_server, "POST", "/v1/jobs/selftest/run", b'{"dry_run": true}')
    route = re.sub(r"\{(\w+)\}", lambda m: PATH_SAMPLES.get(m[1], m[0]), cmd.route)
    status, env = await request(agent_server, cmd.method, route + query, body)
    if cmd.name in NEEDS_DOCKER | NEEDS_OLLAMA | NEEDS_PROMETHEUS:
        upstream = ("docker" if cmd.name in NEEDS_DOCKER else
                    "ollama" if cmd.name in NEEDS_OLLAMA else "prometheus")
        assert (status, env["error"]["details"]["upstream"]) == (503, upstream), env
        assert one_audit(agent_server, env["request_id"])["VMAGENT_COMMAND"] == cmd.name
        return
    assert status == 200, env
    assert env["ok"] is True
    assert one_audit(agent_server, env["request_id"])["VMAGENT_COMMAND"] == cmd.name


async def test_openapi_is_the_registry(agent_server: Agent) -> None:
    _status, env = await request(agent_server, "GET", "/v1/openapi.json")
    doc = env["data"]
    assert doc == json.loads(json.dumps(openapi_document()))
    ops = {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}
    assert len(ops) == len(COMMANDS)
    for cmd in COMMANDS:
        op = ops[(cmd.method, openapi_path(cmd.route))]
        assert op["x-vmagent-role"] == cmd.role
        assert op["x-vmagent-command"] == cmd.name
    hold_body = ops[("PUT", "/v1/hold")]["requestBody"]["content"]["application/json"]["schema"]
    assert hold_body["required"] == ["reason"]
    assert hold_body["additionalProperties"] is False


def protocol_md() -> Path:
    """shared/PROTOCOL.md beside the checkout (as CI lays it) or, for a local clone
    (``git clone . /tmp/fresh``), beside the repository it was cloned from."""
    repo = Path(__file__).resolve().parents[2]
    places = [repo.parent / "shared" / "PROTOCOL.md"]
    origin = subprocess.run(["git", "-C", str(repo), "config", "remote.origin.url"],
                            capture_output=True, text=True, check=False).stdout.strip()
    if origin.startswith("/"):
        places.append(Path(origin).resolve().parent / "shared" / "PROTOCOL.md")
    found = [p for p in places if p.exists()]
    assert found, f"the contract shared/PROTOCOL.md is in none of {[str(p) for p in places]}"
    return found[0]


def protocol_md_commands() -> dict[tuple[str, str], str]:
    """(METHOD, /path) -> role from the command table of shared/PROTOCOL.md."""
    path = protocol_md()
    rows = {}
    for line in path.read_text().splitlines():
        line = line.replace("\\|", "/")
        m = re.match(r"\| (GET|PUT|POST|DELETE) (/v1/[^ ?|]+)[^|]*\| (viewer|op) \|", line)
        if m:
            rows[(m[1], m[2])] = "operator" if m[3] == "op" else "viewer"
    return rows


def test_the_copy_in_docs_is_the_contract() -> None:
    """docs/PROTOCOL.md (for a clone, which has no shared/ beside it) is the contract as is."""
    copy = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
    assert copy.read_bytes() == protocol_md().read_bytes(), \
        f"docs/PROTOCOL.md differs from the contract: cp {protocol_md()} docs/PROTOCOL.md"


def test_registry_matches_protocol_md() -> None:
    documented = protocol_md_commands()
    assert len(documented) > 20  # the table was found and parsed
    for cmd in COMMANDS:
        key = (cmd.method, openapi_path(cmd.route))
        assert key in documented, f"{key} is not in PROTOCOL.md"
        assert documented[key] == cmd.role, key


async def test_405_carries_an_allow_header(agent_server: Agent) -> None:
    raw = await asyncio.to_thread(_raw_bytes, agent_server.socket_path,
                                  b"PATCH /v1/hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  b"Content-Length: 0\r\n\r\n")
    head = raw.partition(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 405")
    assert "Allow: DELETE, GET, PUT" in head


def _raw_bytes(path: str, data: bytes, *, shut: bool = False) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


async def test_duplicate_json_keys_are_refused(agent_server: Agent) -> None:
    status, env = await request(agent_server, "PUT", "/v1/hold",
                                b'{"reason": "a", "reason": "b"}')
    assert_error(status, env, 400, "bad_request")
    assert env["error"]["details"]["field"] == "reason"
    assert HoldStore(agent_server.state_dir).get().active is False


async def test_client_gone_mid_body_is_not_internal(agent_server: Agent,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    data = b"PUT /v1/hold HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"reason\":"
    await asyncio.to_thread(_raw_bytes, agent_server.socket_path, data, shut=True)
    for _ in range(50):
        if agent_server.audit_entries():
            break
        await asyncio.sleep(0.05)
    results = [e["VMAGENT_RESULT"] for e in agent_server.audit_entries()]
    assert results == ["client_disconnected"]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert HoldStore(agent_server.state_dir).get().active is False


async def test_slow_body_is_a_bad_request_naming_the_body(short_tmp: Path) -> None:
    agent, _runner, stopper = await start_agent(short_tmp, client_timeout_s=0.5)
    try:
        data = b"PUT /v1/hold HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"reason\":"
        raw = await asyncio.to_thread(_raw_bytes, agent.socket_path, data)
        env = json.loads(raw.partition(b"\r\n\r\n")[2])
        assert raw.startswith(b"HTTP/1.1 400")
        assert env["error"]["details"]["field"] == "body"
    finally:
        await stopper.stop()


async def test_query_cannot_override_a_path_parameter(agent_server: Agent) -> None:
    status, env = await request(agent_server, "GET", "/v1/runs/11?id=10")
    assert_error(status, env, 400, "bad_request")
    assert env["error"]["details"]["field"] == "id"


async def test_integers_are_ascii_digits_only(agent_server: Agent) -> None:
    status, env = await request(agent_server, "GET", "/v1/jobs/selftest/runs?limit=%EF%BC%95")
    assert_error(status, env, 400, "bad_request")
    assert env["error"]["details"]["field"] == "limit"
