"""End-to-end fixtures: one systemd container for the whole session (boot time matters).

``box`` (session) builds or reuses the Debian root (scripts/e2e-rootfs.sh),
starts the tests' own Docker engine, imports the root and boots it with
systemd as PID 1 (options and why: tests/e2e/box.py), builds the wheelhouse
outside with this venv's Python 3.11 (bookworm's python3 is 3.11, so binary
wheels match), copies the checkout and the wheels in and runs
``make install`` there with ``WHEELHOUSE=`` (no network inside).  Right after
the install it stops the job timers (so no timer fires during the tests; the
tests start their services by hand) and records, once, what the first
connection does: ``box.first_contact``.  At the end the container, the engine
(with the image) and the wheelhouse are removed, also when tests fail.

A failed e2e test's report carries the tail of the container's journal.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.box import SRC, WHEELS, BoxError, SystemdBox
from tests.engine_fixture import missing_prerequisite, started_engine

REPO = Path(__file__).resolve().parents[2]
ROOTFS_SCRIPT = REPO / "scripts" / "e2e-rootfs.sh"
#: The job timers shipped in systemd/ (vm-agent-<job>.timer).
TIMERS = sorted(p.name for p in (REPO / "systemd").glob("vm-agent-*.timer"))
_BOX = pytest.StashKey[SystemdBox]()
_TIMINGS = pytest.StashKey[str]()


def _missing_prerequisite() -> str | None:
    if (reason := missing_prerequisite("e2e")) is not None:
        return reason
    if not Path("/usr/sbin/debootstrap").exists():
        return "/usr/sbin/debootstrap missing: run `make deps` (Debian package debootstrap)"
    if shutil.which("docker") is None:
        return "the docker CLI is missing: run `make deps` (Debian package docker.io)"
    if sys.version_info[:2] != (3, 11):
        return (f"the wheelhouse must be built with Python 3.11 (bookworm's python3), "
                f"not {sys.version.split()[0]}")
    return None


def _rootfs() -> Path:
    done = subprocess.run([str(ROOTFS_SCRIPT)], capture_output=True, text=True, timeout=1200,
                          check=False)
    if done.returncode != 0:
        pytest.fail(f"scripts/e2e-rootfs.sh failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def _wheelhouse(dest: Path) -> None:
    """``pip wheel -w DEST . setuptools`` with this venv's Python (PyPI, outside the box)."""
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
            "-w", str(dest), str(REPO), "setuptools"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                          cwd=REPO)
    if done.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{done.stderr[-3000:]}")


def _install(box: SystemdBox, wheels: Path) -> None:
    box.copy_tree(REPO, SRC)
    box.copy_tree(wheels, WHEELS, exclude=set())
    started = time.monotonic()
    done = box.run(["make", "-C", SRC, "install"], env={"WHEELHOUSE": WHEELS}, check=False,
                   timeout_s=600)
    # Before anything else: no timer may fire (and start the agent) during the tests.
    box.run(["systemctl", "stop", *TIMERS], check=False)
    box.install_seconds = time.monotonic() - started
    box.install_output = done.out + done.err
    if done.rc != 0:
        raise BoxError(f"make install failed in the container:\n{done!r}")


def _timer_runs(box: SystemdBox) -> list[str]:
    """Job services that have run since boot (a timer fired during the install)."""
    services = [t.removesuffix(".timer") + ".service" for t in TIMERS]
    ran = []
    for service in services:
        if box.show(service, "ExecMainStartTimestampMonotonic").get(
                "ExecMainStartTimestampMonotonic", "0") != "0":
            ran.append(service)
    return ran


def _first_contact(box: SystemdBox) -> dict[str, Any]:
    """What is running before the first connection, and what the first `health` does.

    A timer whose calendar time fell inside the seconds between ``enable --now``
    and our ``systemctl stop`` (every 10 minutes, AccuracySec 1 min) starts the
    agent by itself; then the agent is stopped first (the socket keeps
    listening) and ``timer_fired`` says so, instead of a spurious failure.
    """
    fired = _timer_runs(box)
    if fired:
        box.run(["systemctl", "stop", "vm-agent.service"], timeout_s=60)
    facts: dict[str, Any] = {
        "timer_fired": fired,
        "service_before": box.run(["systemctl", "is-active", "vm-agent.service"],
                                  check=False).out.strip(),
        "socket_before": box.run(["systemctl", "is-active", "vm-agent.socket"],
                                 check=False).out.strip(),
        "procs_before": box.run(["pgrep", "-af", "vm-agent serve"], check=False).out.strip(),
    }
    started = time.monotonic()
    health = box.run(["vm-agentctl", "--json", "health"], check=False, timeout_s=60)
    facts["health_seconds"] = time.monotonic() - started
    facts["health"] = health
    facts["service_after"] = box.show("vm-agent.service", "ActiveState", "MainPID",
                                      "TriggeredBy")
    facts["version"] = box.run(["vm-agentctl", "--json", "version"], check=False).out
    return facts


@pytest.fixture(scope="session")
def box(request: pytest.FixtureRequest) -> Iterator[SystemdBox]:
    """The booted, installed container (see the module docstring)."""
    if (missing := _missing_prerequisite()) is not None:
        pytest.skip(missing)
    rootfs = _rootfs()
    with started_engine(None) as engine:
        the_box = SystemdBox(engine)
        wheels = Path(tempfile.mkdtemp(prefix="vmagent-e2e-wheels-"))
        try:
            _wheelhouse(wheels)
            image = the_box.import_image(rootfs, rootfs.stem.removeprefix("bookworm-"))
            request.config.stash[_BOX] = the_box
            the_box.boot(image)
            _install(the_box, wheels)
            the_box.first_contact = _first_contact(the_box)
            request.config.stash[_TIMINGS] = (
                f"e2e: systemd booted to 'running' in {the_box.boot_seconds:.1f} s, "
                f"make install {the_box.install_seconds:.1f} s, first health (activation) "
                f"{the_box.first_contact['health_seconds']:.1f} s")
            yield the_box
        finally:
            the_box.remove()
            shutil.rmtree(wheels, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failed e2e test (or fixture), add the container's journal tail to the report."""
    report = yield
    the_box = item.config.stash.get(_BOX, None)
    if report.failed and the_box is not None and the_box.container_id is not None:
        report.sections.append(("container journal (last 80 lines)", the_box.journal_tail()))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    """Boot, install and activation times of the session's box."""
    if (line := config.stash.get(_TIMINGS, None)) is not None:
        terminalreporter.write_line(line)
