"""The tests' own Docker engine as a fixture body, shared by tests/integration and tests/e2e.

:func:`missing_prerequisite` names what a private dockerd needs and is not
there (root, dockerd, containerd, runc, busybox-static); :func:`started_engine`
skips with that reason, starts a :class:`TestEngine`, builds the busybox test
image, fails the test (not skips) when the engine does not start, and stops
the engine at the end, also when tests fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.dockerd import BUSYBOX, CONTAINERD, DOCKERD, EngineError, TestEngine


def missing_prerequisite(layer: str) -> str | None:
    """Why ``layer``'s private dockerd cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return f"{layer} tests need root (they start a private dockerd)"
    for path, package in ((DOCKERD, "docker.io"), (CONTAINERD, "containerd"),
                          (BUSYBOX, "busybox-static")):
        if not Path(path).exists():
            return f"{path} missing: run `make deps` (Debian package {package})"
    if shutil.which("runc") is None:
        return "runc missing: run `make deps` (Debian package runc)"
    return None


@contextlib.contextmanager
def started_engine(missing: str | None) -> Iterator[TestEngine]:
    """A started engine with the test image built; skips when ``missing`` names a reason."""
    if missing is not None:
        pytest.skip(missing)
    engine = TestEngine()
    try:
        try:
            engine.start()
            engine.build_test_image()
        except EngineError as exc:
            pytest.fail(str(exc))
        yield engine
    finally:
        engine.stop()
