"""The two servers under test: the real agent and the baseline, each on its own socket."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

from bench import common

ROOT = Path(__file__).resolve().parent.parent
#: systemd variables the agent must not inherit from whoever runs the bench.
_CLEAN_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS",
              "LISTEN_FDNAMES")


def write_config(tmp: Path, docker_host: str, *, watchdog_events: bool = True,
                 name: str = "vm-agent.yaml") -> Path:
    """etc/vm-agent.yaml with ``docker.host`` (and ``watchdog.events``) set; ``tmp/name``."""
    data = yaml.safe_load((ROOT / "etc" / "vm-agent.yaml").read_text())
    data["docker"]["host"] = docker_host
    data["watchdog"]["events"] = watchdog_events
    data["metrics"]["textfile"] = str(tmp / "vm-agent.prom")  # never the host's node_exporter
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    return env | extra


def _vm_agent() -> str:
    beside = Path(sys.executable).parent / "vm-agent"
    return str(beside if beside.exists() else ROOT / ".venv" / "bin" / "vm-agent")


def spawn_agent(config: Path, work: Path, **env: str) -> subprocess.Popen[bytes]:
    """``vm-agent serve`` on ``work/agent.sock``; stdout/stderr (audit lines) to a log."""
    work.mkdir(parents=True, exist_ok=True)
    argv = [_vm_agent(), "serve", "--config", str(config), "--socket", str(work / "agent.sock"),
            "--state-dir", str(work), "--run-dir", str(work)]
    with open(work / "agent.log", "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=_env(**env), start_new_session=True)


def spawn_baseline(work: Path) -> subprocess.Popen[bytes]:
    """bench/baseline_server.py on ``work/baseline.sock``."""
    work.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bench.baseline_server", "--socket", str(work / "baseline.sock")]
    with open(work / "baseline.log", "ab") as log:
        return subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, env=_env(), start_new_session=True)


def started(stack: contextlib.ExitStack, proc: subprocess.Popen[bytes],
            sock: Path) -> subprocess.Popen[bytes]:
    """Register ``proc`` for stopping and wait (at most 30 s) until ``sock`` answers."""
    stack.callback(common.stop, proc)
    common.wait_for_socket(str(sock), proc, timeout_s=30.0)
    return proc
