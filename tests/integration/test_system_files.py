"""The shipped sudoers and logrotate files, checked with the real visudo and logrotate.

Nothing is installed: the files are checked (and rotated) as temp copies.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SUDOERS = ROOT / "sudoers.d" / "vm-agent"
LOGROTATE = ROOT / "logrotate.d" / "vm-agent"
LEGACY_LOGS = ("/var/log/vm-cleanup.log", "/var/log/vm-health-check.log",
               "/var/log/docker-watchdog.log")
CTL = "/usr/local/bin/vm-agentctl"


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"{name} not installed (make deps)")
    return path


def visudo(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("visudo"), "-cf", str(path)], capture_output=True, text=True)


# --- sudoers -----------------------------------------------------------------------

def test_sudoers_name_has_no_dot() -> None:
    assert "." not in SUDOERS.name  # sudo's #includedir skips names with a dot


def test_sudoers_passes_visudo(tmp_path: Path) -> None:
    copy = tmp_path / "vm-agent"
    shutil.copy(SUDOERS, copy)
    copy.chmod(0o440)
    done = visudo(copy)
    assert done.returncode == 0, done.stdout + done.stderr


def test_broken_sudoers_fails_visudo(tmp_path: Path) -> None:
    broken = tmp_path / "vm-agent"
    broken.write_text(SUDOERS.read_text().replace("NOPASSWD:", "NOPASSWD"))
    broken.chmod(0o440)
    assert visudo(broken).returncode != 0


def _commands(text: str) -> list[str]:
    """Every command of every Cmnd_Alias (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.startswith("Cmnd_Alias"):
            found += [c.strip() for c in line.split("=", 1)[1].split(", ")]
    return found


def test_sudoers_grants_only_exact_vm_agentctl_lines() -> None:
    text = SUDOERS.read_text()
    commands = _commands(text)
    modes = [[], *(["--mode", m] for m in ("standard", "weekly", "monthly"))]
    expected = {" ".join([CTL, "run", "cleanup", *m, *d]) for m in modes
                for d in ([], ["--dry-run"])}
    expected |= {f"{CTL} unhold", f"{CTL} ^hold [A-Za-z0-9][A-Za-z0-9 ._/-]*$"}
    assert set(commands) == expected
    assert not any("*" in c and "^" not in c for c in commands)  # no glob wildcards
    rules = [line for line in text.splitlines() if line.startswith("%")]
    assert rules == ["%vm-agent-ops ALL = (root) NOPASSWD: VMAGENT_CLEANUP, VMAGENT_HOLD"]


def test_hold_reason_pattern_refuses_options() -> None:
    """The hold regex as sudo applies it (POSIX ERE, whole argument string)."""
    pattern = re.compile(r"^hold [A-Za-z0-9][A-Za-z0-9 ._/-]*$")
    assert pattern.match("hold disk investigation by ops-1")
    assert pattern.match("hold migrating /var/lib/docker")  # README's example
    for bad in ("hold", "hold --socket /tmp/x", "hold -x", "hold a;rm", "hold /etc",
                "unhold", "run cleanup"):
        assert not pattern.match(bad), bad


# --- logrotate ---------------------------------------------------------------------------

def test_logrotate_debug_passes(tmp_path: Path) -> None:
    done = subprocess.run([tool("logrotate"), "-d", "-s", str(tmp_path / "state"),
                           str(LOGROTATE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for log in LEGACY_LOGS:
        assert f"considering log {log}" in done.stderr


def _config_for(tmp: Path, *, method: str = "copytruncate") -> tuple[Path, list[Path]]:
    """A copy of the shipped file with the logs moved into ``tmp`` (and ``method``)."""
    text = LOGROTATE.read_text()
    logs = []
    for log in LEGACY_LOGS:
        target = tmp / "log" / Path(log).name
        text = text.replace(log, str(target))
        logs.append(target)
    conf = tmp / "vm-agent.conf"
    conf.write_text(text.replace("    copytruncate\n", f"    {method}\n"))
    conf.chmod(0o644)
    (tmp / "log").mkdir()
    return conf, logs


def _rotate(conf: Path, state: Path) -> None:
    done = subprocess.run([tool("logrotate"), "-f", "-s", str(state), str(conf)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_appending_writer_survives_rotation(tmp_path: Path) -> None:
    conf, logs = _config_for(tmp_path)
    log = logs[0]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # like sh's ">>"
    try:
        os.write(fd, b"before rotation 1\nbefore rotation 2\n")
        _rotate(conf, tmp_path / "state")
        os.write(fd, b"after rotation\n")
        assert log.read_bytes() == b"after rotation\n"  # same inode, no hole of NULs
        assert Path(f"{log}.1").read_bytes() == b"before rotation 1\nbefore rotation 2\n"
        _rotate(conf, tmp_path / "state")  # second rotation: .1 -> .2.gz (delaycompress)
        os.write(fd, b"after second rotation\n")
    finally:
        os.close(fd)
    assert log.read_bytes() == b"after second rotation\n"
    assert Path(f"{log}.1").read_bytes() == b"after rotation\n"
    assert subprocess.run(["gzip", "-dc", f"{log}.2.gz"], capture_output=True,
                          check=True).stdout == b"before rotation 1\nbefore rotation 2\n"


def test_create_would_lose_an_open_writers_lines(tmp_path: Path) -> None:
    """Why copytruncate: with ``create`` the open writer keeps writing to the renamed file."""
    conf, logs = _config_for(tmp_path, method="create 0640 root root")
    log = logs[0]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, b"before\n")
        _rotate(conf, tmp_path / "state")
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    assert log.read_bytes() == b""
    assert Path(f"{log}.1").read_bytes() == b"before\nafter\n"
