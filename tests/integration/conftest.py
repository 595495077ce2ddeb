"""Integration fixtures: the tests' own Docker engine (see ``dockerd.py``).

``docker_engine`` (session): a private dockerd with the busybox test image
built once; stopped and its temp dir deleted at session end, also when
tests fail.  It skips, with the reason, when not root or dockerd,
containerd or busybox-static is missing (``make deps`` installs them); in
strict mode (``make test``) that skip is a failure.

``engine`` (function): the same engine, emptied of containers after the
test, so each test counts only what it created.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.dockerd import BUSYBOX, CONTAINERD, DOCKERD, EngineError, TestEngine

_TIMINGS = pytest.StashKey[str]()


def _missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root (they start a private dockerd)"
    for path, package in ((DOCKERD, "docker.io"), (CONTAINERD, "containerd"),
                          (BUSYBOX, "busybox-static")):
        if not Path(path).exists():
            return f"{path} missing: run `make deps` (Debian package {package})"
    if shutil.which("runc") is None:
        return "runc missing: run `make deps` (Debian package runc)"
    return None


@pytest.fixture(scope="session")
def docker_engine(request: pytest.FixtureRequest) -> Iterator[TestEngine]:
    """A started private engine with ``vmagent-test/busybox:latest`` built."""
    if (reason := _missing_prerequisite()) is not None:
        pytest.skip(reason)
    engine = TestEngine()
    try:
        try:
            engine.start()
            engine.build_test_image()
        except EngineError as exc:
            pytest.fail(str(exc))
        request.config.stash[_TIMINGS] = (
            f"test dockerd: storage driver {engine.storage_driver}, started in "
            f"{engine.start_seconds:.2f} s, test image built in {engine.image_build_seconds:.2f} s")
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def engine(docker_engine: TestEngine) -> Iterator[TestEngine]:
    """The session engine; every container is removed after the test."""
    docker_engine.remove_all_containers()
    yield docker_engine
    docker_engine.remove_all_containers()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    if (line := config.stash.get(_TIMINGS, None)) is not None:
        terminalreporter.write_line(line)
