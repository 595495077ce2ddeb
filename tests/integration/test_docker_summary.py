"""DockerEngine.summary against the tests' own dockerd (real HEALTHCHECKs, real sockets)."""

from __future__ import annotations

import errno
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agent.containers import dockerfail
from agent.containers.engine import DockerEngine, health_status
from agent.host.model import DockerSummary
from tests.integration.dockerd import TestEngine

pytestmark = pytest.mark.integration


@pytest.fixture
def silent_socket() -> Iterator[str]:
    """A Unix socket that accepts connections (backlog) but never answers."""
    folder = tempfile.mkdtemp(prefix="vms-", dir="/tmp")
    path = f"{folder}/silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(16)
        yield path
    Path(path).unlink()
    Path(folder).rmdir()


@pytest.fixture
def stale_socket(silent_socket: str) -> Iterator[str]:
    """A socket file nobody listens on any more (a crashed engine's)."""
    path = f"{silent_socket}.stale"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(path)
    yield path
    Path(path).unlink()


async def summary_once(host: str, timeout_s: float) -> DockerSummary:
    """One summary from a fresh engine client, closed after."""
    docker = DockerEngine(host, timeout_s)
    try:
        return await docker.summary()
    finally:
        await docker.aclose()


async def timed_summary(engine: DockerEngine) -> tuple[DockerSummary, float]:
    started = time.monotonic()
    summary = await engine.summary()
    return summary, time.monotonic() - started


async def test_counts_running_and_unhealthy_containers(engine: TestEngine) -> None:
    engine.run_unhealthy("zeta-bad")
    engine.run_unhealthy("alpha-bad", retries=2)
    engine.run_healthy("good")
    engine.run_plain("no-check")
    engine.run_stopped("done")
    for name, status in (("zeta-bad", "unhealthy"), ("alpha-bad", "unhealthy"),
                         ("good", "healthy"), ("no-check", "none")):
        engine.wait_health(name, status, timeout_s=20)

    summary = await summary_once(engine.host, 5)

    assert summary == DockerSummary(available=True, containers_total=5, running=4, unhealthy=2,
                                    unhealthy_names=("alpha-bad", "zeta-bad"))


async def test_container_without_healthcheck_has_health_none(engine: TestEngine) -> None:
    engine.run_plain("no-check")
    engine.run_healthy("good")
    engine.wait_health("good", "healthy", timeout_s=20)
    api = engine.client().api

    plain, good = api.inspect_container("no-check"), api.inspect_container("good")

    assert "Health" not in plain["State"]
    assert health_status(plain) == "none"
    assert health_status(good) == "healthy"
    none_filtered = api.containers(all=True, filters={"health": "none"})
    assert [c["Names"] for c in none_filtered] == [["/no-check"]]
    summary = await summary_once(engine.host, 5)
    assert (summary.running, summary.unhealthy) == (2, 0)


async def test_stopped_unhealthy_container_counts_as_stopped(engine: TestEngine) -> None:
    engine.run_unhealthy("was-bad")
    engine.wait_health("was-bad", "unhealthy", timeout_s=20)
    engine.client().api.stop("was-bad", timeout=5)

    summary = await summary_once(engine.host, 5)

    assert engine.health("was-bad") == "unhealthy"  # Docker keeps the last status
    assert summary == DockerSummary(available=True, containers_total=1, running=0)


async def test_missing_socket_is_unavailable_not_an_error() -> None:
    docker = DockerEngine("unix:///tmp/vmd-no-such-dir/docker.sock", timeout_s=2)

    summary, took = await timed_summary(docker)

    assert summary.available is False
    assert summary.error == ("socket not found: unix:///tmp/vmd-no-such-dir/docker.sock; "
                             + dockerfail._ERRNO_HINT[errno.ENOENT])
    assert "systemctl status docker" in summary.error  # says what to do
    assert took < 2.5
    assert await docker.ping() is False
    await docker.aclose()


async def test_stale_socket_is_connection_refused(stale_socket: str) -> None:
    summary = await summary_once(f"unix://{stale_socket}", 2)

    assert summary == DockerSummary(available=False,
                                    error=f"connection refused: unix://{stale_socket}; "
                                    "is Docker running? (systemctl status docker)")


async def test_silent_engine_times_out_within_the_timeout(silent_socket: str) -> None:
    docker = DockerEngine(f"unix://{silent_socket}", timeout_s=1)

    summary, took = await timed_summary(docker)

    assert summary.available is False
    assert summary.error == f"no answer from unix://{silent_socket} within 1 s"
    assert 0.9 < took < 1.5
    await docker.aclose()


async def test_engine_down_then_back_is_picked_up() -> None:
    private = TestEngine()
    try:
        private.start()
        private.build_test_image()
        private.run_plain("survivor")
        docker = DockerEngine(private.host, timeout_s=3)
        assert await docker.summary() == DockerSummary(available=True, containers_total=1,
                                                       running=1)
        pid, base = private.pid, private.base
        private.stop(keep_data=True)
        assert pid is not None and not psutil.pid_exists(pid)

        down, took = await timed_summary(docker)
        assert down.available is False
        assert down.error is not None and down.error.startswith(
            f"socket not found: {private.host}; is Docker running here?")
        assert took < 3.5
        assert await docker.ping() is False

        private.start()
        assert await docker.ping() is True
        assert await docker.summary() == DockerSummary(available=True, containers_total=1)
        await docker.aclose()
    finally:
        private.stop()
    assert base is not None and not base.exists()
