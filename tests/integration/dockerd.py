"""The tests' own Docker engine: a child ``dockerd`` + ``containerd`` in one temp dir.

Nothing here touches the host's Docker: own data root, exec root, pidfile,
daemon.json, trust key and API socket under ``/tmp/vmd-XXXXXXXX`` (short: a
Unix socket path is limited to 108 bytes), and its own ``containerd``
(dockerd 20.10 would otherwise join a system one at
/run/containerd/containerd.sock).  ``--bridge=none --iptables=false
--ip6tables=false --ip-forward=false --ip-masq=false --userland-proxy=false``:
no firewall, sysctl or network device change; containers get
``network_mode="none"``.  The only host paths touched are the ones dockerd
20.10 / containerd 1.6 hard-code, ``/run/docker/plugins`` and
``/run/containerd/s``; ``stop()`` removes them again when ours and empty.

Used by tests/integration/conftest.py; reusable by bench/ and e2e::

    with TestEngine() as engine:
        engine.build_test_image()
        engine.run_unhealthy("web")
        engine.wait_health("web", "unhealthy", timeout_s=10)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import psutil
from docker.models.containers import Container

DOCKERD = "/usr/sbin/dockerd"
CONTAINERD = "/usr/bin/containerd"
BUSYBOX = "/bin/busybox"
TEST_IMAGE = "vmagent-test/busybox:latest"
#: Tried in order when no driver is forced (env VMAGENT_TEST_STORAGE_DRIVER).
STORAGE_DRIVERS = ("overlay2", "vfs")
#: Hard-coded host directories dockerd/containerd create (removed again if ours and empty).
HOST_DIRS = ("/run/containerd/s", "/run/containerd", "/run/docker/plugins", "/run/docker")
SECOND_NS = 1_000_000_000
#: A main process that exits promptly on SIGTERM (PID 1 ignores default-action signals).
KEEP_RUNNING = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""

CONTAINERD_TOML = """version = 2
root = "{base}/ctd"
state = "{base}/ctd-run"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{base}/ctd-run/c.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/ctd/opt"
"""


class EngineError(RuntimeError):
    """The test engine did not start, stop or answer as expected (message has the log tail)."""


def _log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a daemon log, without containerd's gRPC chatter."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join([line for line in text if "module=grpc" not in line][-lines:])


def _ping(sock_path: str) -> bool:
    """True when the engine API at ``sock_path`` answers ``GET /_ping`` with OK."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(sock_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return s.recv(4096).rstrip().endswith(b"OK")
        except OSError:
            return False


def _terminate(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGTERM ``proc`` (one we started), SIGKILL after ``timeout_s`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class TestEngine:
    """A private dockerd; ``host`` is its ``unix://`` URL for the docker SDK or DockerEngine."""

    __test__ = False  # not a pytest test class

    def __init__(self, *, storage_driver: str | None = None, start_timeout_s: float = 60.0,
                 stop_timeout_s: float = 20.0) -> None:
        self.storage_driver = storage_driver or os.environ.get("VMAGENT_TEST_STORAGE_DRIVER")
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.base: Path | None = None
        self.start_seconds = 0.0
        self.image_build_seconds = 0.0
        self._dockerd: subprocess.Popen[bytes] | None = None
        self._containerd: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None
        self._host_dirs = [d for d in HOST_DIRS if not os.path.exists(d)]
        atexit.register(self.stop)

    def _path(self, name: str) -> Path:
        if self.base is None:
            raise EngineError("engine not started")
        return self.base / name

    @property
    def socket_path(self) -> str:
        return str(self._path("docker.sock"))

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._dockerd.pid if self._dockerd else None

    def start(self) -> float:
        """Start (or, after ``stop(keep_data=True)``, resume) the engine; returns seconds taken.

        Raises EngineError (with the dockerd log tail) when no storage driver works
        or ``/_ping`` does not answer within ``start_timeout_s``.
        """
        if self._dockerd is not None:
            raise EngineError(f"test dockerd already running (pid {self._dockerd.pid})")
        started = time.monotonic()
        if self.base is None:
            self.base = Path(tempfile.mkdtemp(prefix="vmd-", dir="/tmp"))
            key = {"deprecated-key-path": str(self.base / "key.json")}  # not /etc/docker/key.json
            (self.base / "daemon.json").write_text(json.dumps(key))
        drivers = (self.storage_driver,) if self.storage_driver else STORAGE_DRIVERS
        errors = []
        for driver in drivers:
            try:
                self._launch(driver)
            except EngineError as exc:
                errors.append(str(exc))
                self._halt()
                continue
            self.storage_driver = driver
            self.start_seconds = time.monotonic() - started
            return self.start_seconds
        raise EngineError("test dockerd did not start:\n" + "\n\n".join(errors))

    def _launch(self, driver: str) -> None:
        ctd = self._containerd = self._spawn(
            [CONTAINERD, "--config", str(self._containerd_toml())], "containerd")
        self._dockerd = self._spawn(self._dockerd_argv(driver), "dockerd")
        deadline = time.monotonic() + self.start_timeout_s
        while not _ping(self.socket_path):
            for proc, name in ((ctd, "containerd"), (self._dockerd, "dockerd")):
                if proc.poll() is not None:
                    raise self._start_error(driver, name, f"exited {proc.returncode}")
            if time.monotonic() > deadline:
                raise self._start_error(driver, "dockerd",
                                        f"no /_ping answer in {self.start_timeout_s:g} s")
            time.sleep(0.05)

    def _start_error(self, driver: str, name: str, what: str) -> EngineError:
        tail = _log_tail(self._path(f"{name}.log"))
        return EngineError(f"[storage driver {driver}] {name} {what}; {name}.log tail:\n{tail}")

    def _containerd_toml(self) -> Path:
        path = self._path("containerd.toml")
        path.write_text(CONTAINERD_TOML.format(base=self.base))
        return path

    def _dockerd_argv(self, driver: str) -> list[str]:
        p = self._path
        return [DOCKERD, f"--data-root={p('docker')}", f"--exec-root={p('run')}",
                f"--pidfile={p('dockerd.pid')}", f"-H=unix://{p('docker.sock')}",
                f"--config-file={p('daemon.json')}",
                f"--containerd={p('ctd-run')}/c.sock", f"--storage-driver={driver}",
                "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
                "--ip-masq=false", "--userland-proxy=false", "--shutdown-timeout=3"]

    def _spawn(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        with open(self._path(f"{name}.log"), "ab") as log:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop dockerd, containerd and any shim they left (SIGTERM, SIGKILL after a bound).

        Unless ``keep_data``, unmounts what is left under the temp dir and deletes it.
        Idempotent; only processes this engine started (or whose command line names
        its temp dir) are signalled.
        """
        self._halt()
        if not keep_data and self.base is not None:
            self._unmount_leftovers()
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
            for path in self._host_dirs:
                with contextlib.suppress(OSError):
                    os.rmdir(path)

    def restart(self) -> float:
        """Stop and start on the same data root (containers survive, stopped); seconds taken."""
        self.stop(keep_data=True)
        return self.start()

    def _halt(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        _terminate(self._dockerd, self.stop_timeout_s)
        _terminate(self._containerd, self.stop_timeout_s)
        self._dockerd = self._containerd = None
        if self.base is not None:
            self._kill_leftover_shims()

    def _kill_leftover_shims(self) -> None:
        """SIGKILL shims (and their container processes) that name our containerd socket."""
        marker = f"{self.base}/ctd-run/"
        killed: list[psutil.Process] = []
        for proc in psutil.process_iter(["cmdline"]):
            if any(marker in arg for arg in proc.info["cmdline"] or ()):
                with contextlib.suppress(psutil.Error):
                    family = [*proc.children(recursive=True), proc]
                    for member in family:
                        member.kill()
                    killed += family
        psutil.wait_procs(killed, timeout=10)

    def _unmount_leftovers(self) -> None:
        prefix = f"{self.base}/"
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)

    def __enter__(self) -> TestEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self) -> docker.DockerClient:
        """A docker SDK client on this engine (cached until the next stop)."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host, timeout=60)
        return self._client

    def build_test_image(self) -> str:
        """Build ``vmagent-test/busybox:latest`` FROM scratch with busybox-static; its id."""
        started = time.monotonic()
        ctx = self._path("ctx")
        ctx.mkdir(exist_ok=True)
        shutil.copy2(BUSYBOX, ctx / "busybox")
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        image, _ = self.client().images.build(path=str(ctx), tag=TEST_IMAGE, rm=True,
                                              forcerm=True, network_mode="none")
        self.image_build_seconds = time.monotonic() - started
        return str(image.id)

    def run(self, name: str, *, command: list[str] | None = None,
            healthcheck: dict[str, Any] | None = None, **kwargs: Any) -> Container:
        """Run a detached test-image container, always ``network_mode="none"``."""
        if "network_mode" in kwargs or "network" in kwargs:
            raise ValueError("test containers always run with network_mode='none'")
        return self.client().containers.run(
            TEST_IMAGE, command or KEEP_RUNNING, name=name, detach=True, network_mode="none",
            healthcheck=healthcheck, labels={"vmagent-test": "1"}, **kwargs)

    def run_healthy(self, name: str) -> Container:
        """Running, HEALTHCHECK ``true`` every second: healthy after about 1 s."""
        return self.run(name, healthcheck=_check(["CMD", "true"], retries=3))

    def run_unhealthy(self, name: str, *, retries: int = 1) -> Container:
        """Running, HEALTHCHECK ``false`` every second: unhealthy after ``retries`` seconds."""
        return self.run(name, healthcheck=_check(["CMD", "false"], retries=retries))

    def run_plain(self, name: str) -> Container:
        """Running, no healthcheck: inspect shows no ``State.Health``."""
        return self.run(name)

    def run_stopped(self, name: str) -> Container:
        """A container that ran ``true`` and exited 0 (status ``exited``)."""
        container = self.run(name, command=["true"])
        container.wait(timeout=30)
        return container

    def health(self, name: str) -> str:
        """``State.Health.Status`` of ``name``, or ``none`` when it has no healthcheck."""
        state = self.client().api.inspect_container(name)["State"]
        return str(state.get("Health", {}).get("Status", "none"))

    def wait_health(self, name: str, status: str, timeout_s: float = 30.0) -> None:
        """Poll until ``name`` has health ``status``; TimeoutError with the last one."""
        deadline = time.monotonic() + timeout_s
        while (current := self.health(name)) != status:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: health {current!r}, not {status!r} "
                                   f"after {timeout_s:g} s")
            time.sleep(0.1)

    def remove_all_containers(self) -> None:
        """Force-remove every container of this (private) engine."""
        api = self.client().api
        for listed in api.containers(all=True):
            api.remove_container(listed["Id"], force=True, v=True)


def _check(test: list[str], *, retries: int) -> dict[str, Any]:
    """A HEALTHCHECK every second with a 1 s timeout (durations in nanoseconds)."""
    return {"test": test, "interval": SECOND_NS, "timeout": SECOND_NS, "retries": retries,
            "start_period": 0}
