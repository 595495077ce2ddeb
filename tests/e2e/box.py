"""A Debian bookworm container booted with systemd as PID 1, in the tests' own engine.

How it boots, and why each option (found on this CI host: cgroup v1 "hybrid"
layout, i.e. a tmpfs /sys/fs/cgroup with v1 controllers, a ``name=systemd``
hierarchy and an empty cgroup2 at /sys/fs/cgroup/unified; kernel 6.18;
dockerd 20.10 with runc 1.1; no AppArmor):

``--cap-add SYS_ADMIN`` (the one capability added to Docker's default set)
    PID 1 must mount a writable cgroup hierarchy to put units in: Docker
    mounts /sys/fs/cgroup read-only, so without CAP_SYS_ADMIN systemd 252
    falls back to the read-only ``name=systemd`` hierarchy and dies at once
    with "Failed to create /init.scope control group: Read-only file
    system" (exit 255, tried).  It also lets systemd build the hardened
    vm-agent.service's sandbox (ProtectSystem=, PrivateTmp=, PrivateDevices=
    are mount namespaces; without it the unit fails with 226/NAMESPACE).
    Docker's default seccomp profile allows mount/unshare/setns exactly when
    this capability is granted.  Not ``--privileged``: no device access, no
    other capability, seccomp stays on.
``--cgroupns private``
    With its own cgroup namespace, the cgroup2 hierarchy systemd mounts at
    /sys/fs/cgroup/unified is rooted at the container's own cgroup, so the
    container's systemd can create and kill cgroups only below itself.  With
    the host's namespace that mount would expose the host's whole tree,
    writable.  No /sys/fs/cgroup bind mount from the host is needed.
    (systemd logs "Failed to create compat systemd cgroup ..." for the
    read-only v1 ``name=systemd`` mirror; it tracks units in the cgroup2
    hierarchy, so that is noise.)
``--tmpfs /run --tmpfs /run/lock --tmpfs /tmp``
    systemd expects /run (and /run/lock) to be fresh tmpfs at boot, and the
    journal (/run/log/journal), sockets and the agent's /run/vm-agent live
    there; /tmp so that nothing of a run is left in the image layer.
``-e container=docker``
    How systemd is told it runs in a container (``man 7 systemd``,
    "$container"): it skips what a container cannot do.
``--stop-signal SIGRTMIN+3``
    systemd's "halt" signal; the default SIGTERM only makes PID 1 re-execute.
``--network none``, ``--hostname``, ``--add-host``
    As every test container.  The host name is in /etc/hosts so that sudo
    can resolve it.  The agent needs no network: it serves a Unix
    socket and reaches the engine through the bind mount below.
``-v <engine socket>:/run/docker.sock``
    The test engine's API socket (never the host's default socket) at
    /run/docker.sock, which /var/run/docker.sock names (/var/run -> /run):
    the agent inside manages the engine's real sibling containers.

The image is the debootstrap'd tree of scripts/e2e-rootfs.sh (cached in
/var/cache/vm-agent-e2e), ``docker import``-ed with ``CMD /sbin/init``.
Commands run through ``docker exec`` with the ``docker`` CLI pointed at the
test engine (``-H``); every call is bounded by a timeout.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tests.integration.dockerd import TestEngine

IMAGE = "vmagent-e2e/bookworm"
SRC = "/usr/local/src/vm-agent"
WHEELS = "/usr/local/src/wheels"
SOCKET = "/run/vm-agent/agent.sock"
HOSTNAME = "vm-agent-e2e"
#: What is not copied into the container: the host venv, git data, caches, builds.
EXCLUDED = {".venv", ".git", ".run", "build", ".mypy_cache", ".ruff_cache", ".pytest_cache",
            "__pycache__", "vm_agent.egg-info"}
T = TypeVar("T")


class BoxError(AssertionError):
    """A command in the container failed or timed out (message has its output)."""


class Done:
    """One finished command: ``rc``, ``out`` (stdout), ``err`` (stderr)."""

    def __init__(self, argv: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.argv = list(argv)
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self) -> str:
        return (f"$ {shlex.join(self.argv)}\nrc={self.rc}\n--- stdout\n{self.out[-3000:]}"
                f"\n--- stderr\n{self.err[-3000:]}")


def wait_until(check: Callable[[], T | None], *, timeout_s: float, what: str,
               interval_s: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout_s:g} s (last: {result!r})")
        time.sleep(interval_s)


class SystemdBox:
    """The booted container; ``sh``/``run`` execute in it, ``journal_tail`` reads its journal."""

    def __init__(self, engine: TestEngine, name: str = "vmagent-e2e") -> None:
        self.engine = engine
        self.name = name
        self.boot_seconds = 0.0
        self.container_id: str | None = None
        self.install_seconds = 0.0
        self.install_output = ""
        #: Recorded once by the session fixture (tests/e2e/conftest.py).
        self.first_contact: dict[str, Any] = {}

    # --- lifecycle ---------------------------------------------------------
    def import_image(self, tarball: Path, tag: str) -> str:
        """``docker import`` the root tarball as ``IMAGE:tag`` with ``CMD /sbin/init``."""
        ref = f"{IMAGE}:{tag}"
        self._docker(["import", "--change", 'CMD ["/sbin/init"]', str(tarball), ref],
                     timeout_s=300)
        return ref

    def boot(self, image: str, *, timeout_s: float = 90.0) -> float:
        """Start the container and wait for ``systemctl is-system-running`` to say running.

        Returns seconds from ``docker run`` to running.  BoxError when systemd
        settles as degraded (the failed units are in the message) or PID 1 exits.
        """
        started = time.monotonic()
        done = self._docker([
            "run", "-d", "--name", self.name, "--hostname", HOSTNAME,
            "--add-host", f"{HOSTNAME}:127.0.1.1",
            "--network", "none", "--cgroupns", "private", "--cap-add", "SYS_ADMIN",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
            "-e", "container=docker", "--stop-signal", "SIGRTMIN+3",
            "-v", f"{self.engine.socket_path}:/run/docker.sock",
            "--label", "vmagent-test=1", image], timeout_s=60)
        self.container_id = done.out.strip()
        state = wait_until(self._system_state, timeout_s=timeout_s, what="systemd boot")
        self.boot_seconds = time.monotonic() - started
        if state != "running":
            failed = self.sh("systemctl --failed --no-pager --plain", check=False).out
            raise BoxError(f"systemd settled as {state!r}; failed units:\n{failed}")
        return self.boot_seconds

    def _system_state(self) -> str | None:
        if self._docker(["inspect", "-f", "{{.State.Running}}", self.name],
                        check=False).out.strip() != "true":
            raise BoxError("the container's PID 1 exited:\n" + self.logs())
        state = self.run(["systemctl", "is-system-running"], check=False).out.strip()
        return state if state in ("running", "degraded") else None

    def remove(self) -> None:
        """Stop (systemd halts on SIGRTMIN+3) and remove the container; idempotent."""
        if self.container_id is None:
            return
        self._docker(["stop", "-t", "20", self.name], check=False, timeout_s=60)
        self._docker(["rm", "-f", "-v", self.name], check=False, timeout_s=60)
        self.container_id = None

    # --- files -------------------------------------------------------------
    def copy_tree(self, src: Path, dest: str, *, exclude: set[str] = EXCLUDED) -> None:
        """Copy the folder ``src`` to ``dest`` in the container (a tar piped to ``tar -x``)."""
        tarball = Path(self.engine.socket_path).parent / f"copy-{Path(dest).name}.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(src, arcname=".", filter=lambda ti: None if _excluded(ti.name, exclude)
                    else ti)
        self.run(["mkdir", "-p", dest])
        # Piped to tar in the container: `docker cp` cannot write into a tmpfs mount.
        argv = ["docker", "-H", self.engine.host, "exec", "-i", self.name,
                "tar", "-C", dest, "-xf", "-", "--no-same-owner"]
        try:
            with tarball.open("rb") as data:
                proc = subprocess.run(argv, stdin=data, capture_output=True, timeout=120,
                                      check=False)
        finally:
            tarball.unlink()
        if proc.returncode != 0:
            raise BoxError(f"copy to {dest} failed: {proc.stderr.decode(errors='replace')}")

    def write(self, path: str, text: str, *, mode: str = "0644") -> None:
        """Write ``text`` to ``path`` in the container (parents created)."""
        self.run(["sh", "-c", f'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod {mode} "$1"',
                  "sh", path], stdin=text)

    # --- commands ----------------------------------------------------------
    def run(self, argv: Sequence[str], *, user: str | None = None, check: bool = True,
            timeout_s: float = 60.0, env: dict[str, str] | None = None,
            stdin: str | None = None) -> Done:
        """``docker exec`` argv in the container (as ``user``); BoxError on rc != 0 if check."""
        opts = ["-i"] if stdin is not None else []
        for key, value in (env or {}).items():
            opts += ["-e", f"{key}={value}"]
        if user is not None:
            opts += ["-u", user]
        return self._docker(["exec", *opts, self.name, *argv], check=check,
                            timeout_s=timeout_s, stdin=stdin)

    def sh(self, script: str, **kwargs: Any) -> Done:
        """Run a ``sh -c`` script in the container; keyword arguments as :meth:`run`."""
        return self.run(["sh", "-c", script], **kwargs)

    def json(self, argv: Sequence[str], **kwargs: Any) -> Any:
        """Run argv and parse its stdout as JSON."""
        return json.loads(self.run(argv, **kwargs).out)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p`` of ``unit``: property -> value."""
        out = self.run(["systemctl", "show", unit, *(f"-p{p}" for p in props)]).out
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal_tail(self, lines: int = 80) -> str:
        """The last ``lines`` lines of the container's journal (for failure reports)."""
        try:
            done = self.run(["journalctl", "--no-pager", "-n", str(lines)], check=False,
                            timeout_s=20)
        except (BoxError, subprocess.TimeoutExpired) as exc:
            return f"(no journal: {exc})"
        return done.out + done.err

    def logs(self) -> str:
        """The container's console output (systemd's own messages at boot)."""
        done = self._docker(["logs", "--tail", "80", self.name], check=False)
        return done.out + done.err

    def _docker(self, args: Sequence[str], *, check: bool = True, timeout_s: float = 60.0,
                stdin: str | None = None) -> Done:
        argv = ["docker", "-H", self.engine.host, *args]
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BoxError(f"$ {shlex.join(argv)}: no answer in {timeout_s:g} s") from exc
        done = Done(argv, proc)
        if check and done.rc != 0:
            raise BoxError(repr(done))
        return done


def _excluded(name: str, exclude: set[str]) -> bool:
    return any(part in exclude for part in Path(name).parts)
