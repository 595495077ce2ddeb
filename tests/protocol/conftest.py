"""The real app over a real Unix socket in a temp dir, with real peers.

Requests come from this process (root: operator) and from child processes
that drop to other uids (a viewer and a peer in no role), so SO_PEERCRED
and the role mapping are exercised for real.  Audit entries go to an
in-memory stream through the journal writer's fallback path.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from agent.api.access import AccessPolicy
from agent.api.commands import COMMANDS
from agent.api.server import AgentRunner, ServerState, make_runner
from agent.api.services import Services
from agent.api.transport import ConnectionGuard, GuardedUnixSite
from agent.audit import Auditor
from agent.config import (
    AccessConfig,
    Config,
    DockerConfig,
    MetricsConfig,
    RoleConfig,
    SamplingConfig,
)
from agent.host.sampler import HostSampler
from agent.jobs.selftest import SelfTestJob
from agent.journal import JournalWriter
from agent.listener import bind_unix
from agent.wiring import build_services, stop_services

VIEWER_UID = 65534  # nobody
NOBODY_ROLE_UID = 65533
# The child runs as another uid: it needs a Python that uid can execute (stdlib only).
CLIENT_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                      if os.access(p, os.X_OK)), sys.executable)


@dataclass
class Agent:
    socket_path: str
    audit_stream: io.StringIO
    state_dir: Path
    guard: ConnectionGuard
    services: Services

    def audit_entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_stream.getvalue().splitlines() if line]


def test_config(tmp: Path, *, docker_host: str | None = None,
                watchdog: dict[str, Any] | None = None,
                ollama: dict[str, Any] | None = None,
                prometheus: dict[str, Any] | None = None, **server: Any) -> Config:
    """A config for one test agent in ``tmp``: no Docker unless ``docker_host`` is given."""
    cfg = Config()
    return replace(
        cfg,
        server=replace(cfg.server, socket=str(tmp / "agent.sock"), socket_mode=0o666, **server),
        access=AccessConfig(viewer=RoleConfig(uids=(VIEWER_UID,)), operator=RoleConfig()),
        sampling=SamplingConfig(interval_s=5, cpu_window_s=0.2),
        docker=DockerConfig(host=docker_host or f"unix://{tmp}/no-docker.sock",
                            timeout_s=5 if docker_host else 1),
        watchdog=replace(cfg.watchdog, **(watchdog or {})),
        ollama=replace(cfg.ollama, **{"url": "http://127.0.0.1:1", **(ollama or {})}),
        prometheus=replace(cfg.prometheus, **(prometheus or {})),
        metrics=MetricsConfig(textfile=str(tmp / "vm-agent.prom")),
        state_dir=str(tmp / "state"), run_dir=str(tmp),
    )


class Stopper:
    """Stops a test agent the way the daemon does: the server (its runner's cleanup:
    requests drained, queued audit entries written), then every service
    (agent.wiring.stop_services: samplers, jobs, the Docker client's session)."""

    def __init__(self, runner: AgentRunner, services: Services) -> None:
        self.runner = runner
        self.services = services

    async def stop(self) -> None:
        await self.runner.cleanup()
        await stop_services(self.services)


async def start_agent(tmp: Path, *, docker_host: str | None = None,
                      watchdog: dict[str, Any] | None = None,
                      ollama: dict[str, Any] | None = None,
                      prometheus: dict[str, Any] | None = None,
                      **server: Any) -> tuple[Agent, AgentRunner, Stopper]:
    """The daemon's services (agent.wiring) behind the real app on a real socket.

    Docker is absent (the container commands answer 503); the host sampler
    runs; the io sampler makes one pass; the job catalog is the test job.
    ``await stopper.stop()`` stops the server and every service as the daemon
    does (samplers, jobs, the Docker client's session).
    """
    cfg = test_config(tmp, docker_host=docker_host, watchdog=watchdog, ollama=ollama,
                      prometheus=prometheus, **server)
    stream = io.StringIO()
    auditor = Auditor(JournalWriter(socket_path=str(tmp / "no-journal.sock"), stream=stream))
    services = build_services(cfg, auditor, config_digest="test",
                              jobs={"selftest": SelfTestJob()})
    assert isinstance(services.sampler, HostSampler) and services.io is not None
    await services.io.sample_once()  # one pass, no background task: Docker is absent here
    guard = ConnectionGuard(max_connections=cfg.server.max_connections,
                            client_timeout_s=cfg.server.client_timeout_s)
    state = ServerState(services, AccessPolicy(cfg.access), auditor, guard)
    runner = make_runner(COMMANDS, state)
    await runner.setup()
    await services.sampler.start()
    sock = bind_unix(cfg.server.socket, mode=0o666, group=None)
    await GuardedUnixSite(runner, sock, guard).start()
    agent = Agent(cfg.server.socket, stream, Path(cfg.state_dir), guard, services)
    return agent, runner, Stopper(runner, services)


@pytest.fixture
async def agent_server(short_tmp: Path) -> AsyncIterator[Agent]:
    agent, _runner, stopper = await start_agent(short_tmp)
    yield agent
    await stopper.stop()


def exchange(path: str, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes on the socket, read until the agent closes; the raw answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def raw_request(path: str, data: bytes, *, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """Send raw bytes on the socket; return (status, envelope)."""
    head, _, body = exchange(path, data, timeout=timeout).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def http(method: str, path: str, body: bytes = b"", *, headers: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n{headers}\r\n").encode() + body


async def request(agent: Agent, method: str, path: str, body: bytes = b"", *,
                  headers: str = "", timeout_s: float = 10.0) -> tuple[int, dict[str, Any]]:
    data = http(method, path, body, headers=headers)
    return await asyncio.to_thread(raw_request, agent.socket_path, data, timeout=timeout_s)


_AS_USER = """
import json, socket, sys
path, method, url, body = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(path)
b = body.encode()
s.sendall(f"{method} {url} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n"
          f"Content-Length: {len(b)}\\r\\n\\r\\n".encode() + b)
data = b""
while chunk := s.recv(65536):
    data += chunk
head, _, payload = data.partition(b"\\r\\n\\r\\n")
print(json.dumps({"status": int(head.split()[1]), "envelope": json.loads(payload)}))
"""


async def request_as(uid: int, agent: Agent, method: str, path: str,
                     body: str = "") -> tuple[int, dict[str, Any]]:
    """The same request from a child process running as ``uid`` (test runs as root)."""
    proc = await asyncio.create_subprocess_exec(
        CLIENT_PYTHON, "-c", _AS_USER, agent.socket_path, method, path, body,
        user=uid, group=uid, extra_groups=[], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd="/")
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    return result["status"], result["envelope"]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("peer-identity tests need root to run clients as other uids")
