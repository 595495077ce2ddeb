"""scripts/install-test-deps.sh (``make deps``) must never replace the host's Docker.

docker.io conflicts with docker-ce: on a host whose Docker comes from Docker's
own repository, ``apt-get install docker.io`` would remove it (and stop its
containers).  The script's functions are sourced in a real bash with a fake
dpkg database (``installed``) and a PATH holding only what each case has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-test-deps.sh"


def run(tmp_path: Path, *, packages: str, binaries: tuple[str, ...],
        call: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("tr",):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    for name in binaries:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    script = (f"source {SCRIPT}\n"
              f"installed() {{ [[ ' {packages} ' == *\" $1 \"* ]]; }}\n"
              f"{call}\n")
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return subprocess.run([shutil.which("bash") or "/bin/bash", "-c", script], env=env,
                          capture_output=True, text=True, timeout=30, check=False)


ALL_BUT_DOCKER = "busybox-static prometheus debootstrap logrotate sudo git systemd python3-venv"


def test_docker_ce_with_its_binaries_is_used_as_it_is(tmp_path: Path) -> None:
    done = run(tmp_path, packages=f"{ALL_BUT_DOCKER} docker-ce containerd.io",
               binaries=("dockerd", "containerd", "runc"),
               call="check_docker_source && missing_packages")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []  # docker.io is never asked for


def test_docker_ce_without_its_binaries_is_refused(tmp_path: Path) -> None:
    done = run(tmp_path, packages=f"{ALL_BUT_DOCKER} docker-ce", binaries=("runc",),
               call="check_docker_source && missing_packages")
    assert done.returncode != 0
    assert "docker-ce" in done.stderr and "would replace that Docker" in done.stderr
    assert "docker.io" not in done.stdout


@pytest.mark.parametrize("binaries", [(), ("dockerd",), ("dockerd", "containerd")])
def test_no_docker_at_all_asks_for_docker_io(tmp_path: Path, binaries: tuple[str, ...]) -> None:
    done = run(tmp_path, packages="git", binaries=binaries,
               call="check_docker_source && missing_packages")
    assert done.returncode == 0, done.stderr
    assert "docker.io" in done.stdout.split()
    assert "busybox-static" in done.stdout.split()


def test_the_script_is_valid_bash() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    assert os.access(SCRIPT, os.X_OK)
