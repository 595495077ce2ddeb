"""agent.systemd against real AF_UNIX sockets: sd_notify, LISTEN_FDS, watchdog."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import systemd
from agent.systemd import ListenFdsError, Notifier, listen_fds, watchdog_interval_s


def _receive_all(sock: socket.socket) -> list[str]:
    out = []
    sock.settimeout(0.2)
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


@pytest.fixture
def notify_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def notify_abstract(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    name = f"vm-agent-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def _exercise(notifier: Notifier) -> None:
    assert notifier.ready("serving\n40 containers")
    assert notifier.status("sampling\r\nok")
    assert notifier.watchdog()
    assert notifier.stopping()


def test_notify_to_path_socket(notify_path: socket.socket) -> None:
    _exercise(Notifier())
    assert _receive_all(notify_path) == [
        "READY=1\nSTATUS=serving 40 containers", "STATUS=sampling ok", "WATCHDOG=1", "STOPPING=1"]


def test_notify_to_abstract_socket(notify_abstract: socket.socket) -> None:
    _exercise(Notifier())
    assert _receive_all(notify_abstract) == [
        "READY=1\nSTATUS=serving 40 containers", "STATUS=sampling ok", "WATCHDOG=1", "STOPPING=1"]


def test_notify_without_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert caplog.records == []


def test_notify_to_vanished_socket_is_logged_not_raised(
        notify_path: socket.socket, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier()
    assert notifier.ready("up")
    notify_path.close()
    (tmp_path / "notify.sock").unlink()
    with caplog.at_level(logging.WARNING, logger="vm-agent"):
        assert notifier.watchdog() is False   # connected socket: peer gone
        assert notifier.stopping() is False   # reconnect: path gone
    messages = [r.getMessage() for r in caplog.records if r.name == "vm-agent"]
    assert len(messages) == 2
    assert "WATCHDOG=1" in messages[0] and "STOPPING=1" in messages[1]


def test_notify_reconnects_when_socket_returns(
        notify_path: socket.socket, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier()
    path = tmp_path / "notify.sock"
    notify_path.close()
    path.unlink()
    assert notifier.status("a") is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as again:
        again.bind(str(path))
        assert notifier.status("b")
        assert _receive_all(again) == ["STATUS=b"]


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "<self>"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "<other>"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    pids = {"<self>": str(os.getpid()), "<other>": str(os.getpid() + 1)}
    environ = {k: pids.get(v, v) for k, v in env.items()}
    assert watchdog_interval_s(environ=environ) == expected


async def test_watchdog_loop_pings_from_the_event_loop(notify_path: socket.socket) -> None:
    arrivals: list[float] = []
    stop = threading.Event()

    def collect() -> None:
        notify_path.settimeout(0.05)
        while not stop.is_set():
            try:
                if notify_path.recv(64) == b"WATCHDOG=1":
                    arrivals.append(time.monotonic())
            except TimeoutError:
                continue

    reader = threading.Thread(target=collect)
    reader.start()
    task = asyncio.create_task(systemd.watchdog_loop(Notifier(), 0.02))
    await asyncio.sleep(0.15)
    time.sleep(0.3)  # noqa: ASYNC251 - a hung event loop: no pings may arrive meanwhile
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stop.set()
    reader.join()
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) >= 6
    assert max(gaps) >= 0.28
    assert sorted(gaps)[len(gaps) // 2] < 0.1


def _env(**values: str) -> dict[str, str]:
    return dict(values)


def test_listen_fds_ignores_other_pid() -> None:
    environ = _env(LISTEN_PID=str(os.getpid() + 1), LISTEN_FDS="1", LISTEN_FDNAMES="agent")
    assert listen_fds(environ=environ) == []
    assert environ == {}


def test_listen_fds_without_variables() -> None:
    environ = _env(PATH="/usr/bin")
    assert listen_fds(environ=environ) == []
    assert environ == {"PATH": "/usr/bin"}


def test_listen_fds_keeps_environment_when_asked() -> None:
    environ = _env(LISTEN_PID=str(os.getpid() + 1), LISTEN_FDS="1")
    assert listen_fds(unset_environment=False, environ=environ) == []
    assert environ == {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}


@pytest.mark.parametrize("env", [
    {"LISTEN_PID": "me", "LISTEN_FDS": "1"},
    {"LISTEN_PID": "<self>", "LISTEN_FDS": "one"},
    {"LISTEN_PID": "<self>", "LISTEN_FDS": "-1"},
])
def test_listen_fds_rejects_garbage_and_still_clears(env: dict[str, str]) -> None:
    environ = {k: str(os.getpid()) if v == "<self>" else v for k, v in env.items()}
    with pytest.raises(ListenFdsError) as caught:
        listen_fds(environ=environ)
    assert caught.value.code == "internal"
    assert environ == {}


_ADOPT_PROGRAM = """
import os, socket
from agent.systemd import listen_fds
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
os.dup2(server.fileno(), 3, inheritable=True)
os.dup2(server.fileno(), 4, inheritable=True)
environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
socks = listen_fds(environ=environ)
print([s.fileno() for s in socks], [s.type == socket.SOCK_STREAM for s in socks],
      [os.get_inheritable(s.fileno()) for s in socks], environ)
"""


def test_listen_fds_adopts_fds_from_3() -> None:
    """A child process with real sockets at fds 3 and 4, as systemd leaves them."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _ADOPT_PROGRAM], capture_output=True,
                          text=True, timeout=30, env={"PYTHONPATH": str(root)}, check=True)
    assert done.stdout.strip() == "[3, 4] [True, True] [False, False] {}"
