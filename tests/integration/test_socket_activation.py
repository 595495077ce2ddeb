"""Socket activation for real: systemd-socket-activate hands a listening socket to a child."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
ROOT = Path(__file__).resolve().parents[2]

# The activated program: adopt the passed socket, answer one connection with what it saw.
CHILD = """
import os, socket
from agent.systemd import listen_fds
before = sorted(k for k in os.environ if k.startswith("LISTEN_"))
socks = listen_fds()
left = sorted(k for k in os.environ if k.startswith("LISTEN_"))
conn, _ = socks[0].accept()
pid_ok = "pid-ok" if socks and socks[0].fileno() == 3 else "pid-bad"
cloexec = all(not os.get_inheritable(s.fileno()) for s in socks)
conn.sendall(f"fds={len(socks)} {pid_ok} env-left={left} cloexec={cloexec} "
             f"env-before={before} names={os.environ.get('LISTEN_FDNAMES')}".encode())
conn.close()
"""


@pytest.fixture
def activated(tmp_path: Path) -> Iterator[Path]:
    if not os.access(ACTIVATE, os.X_OK):
        if os.environ.get("VMAGENT_STRICT") == "1":
            pytest.fail(f"{ACTIVATE} is missing (install systemd)")
        pytest.skip(f"{ACTIVATE} is missing")
    path = tmp_path / "s.sock"
    proc = subprocess.Popen(
        [ACTIVATE, "-l", str(path), "--fdname=agent", "-E", f"PYTHONPATH={ROOT}",
         sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield _wait_for(path, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=10)


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> Path:
    deadline = time.monotonic() + 10
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"socket never appeared: {proc.communicate(timeout=5)}")
        time.sleep(0.02)
    return path


def _ask(path: Path) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(15)
        client.connect(str(path))
        chunks = []
        while chunk := client.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_child_adopts_the_passed_socket_and_clears_env(activated: Path) -> None:
    assert _ask(activated) == (
        "fds=1 pid-ok env-left=[] cloexec=True "
        "env-before=['LISTEN_FDNAMES', 'LISTEN_FDS', 'LISTEN_PID'] names=None")
