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

from collections.abc import Iterator

import pytest

from tests.engine_fixture import missing_prerequisite, started_engine
from tests.integration.dockerd import TestEngine

_TIMINGS = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def docker_engine(request: pytest.FixtureRequest) -> Iterator[TestEngine]:
    """A started private engine with ``vmagent-test/busybox:latest`` built."""
    with started_engine(missing_prerequisite("integration")) as engine:
        request.config.stash[_TIMINGS] = (
            f"test dockerd: storage driver {engine.storage_driver}, started in "
            f"{engine.start_seconds:.2f} s, test image built in {engine.image_build_seconds:.2f} s")
        yield engine


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
