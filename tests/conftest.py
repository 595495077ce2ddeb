"""Suite-wide hooks.

Strict mode (env ``VMAGENT_STRICT=1``, set by ``make test`` and CI): a
skipped test, or a skipped test module, is reported as a failure with its
skip reason, so CI cannot pass while a layer (root, Docker, a system tool)
was silently skipped.  ``xfail`` results are left alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

STRICT = os.environ.get("VMAGENT_STRICT") == "1"


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in strict mode (VMAGENT_STRICT=1): {_skip_reason(report)}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail_skip(report)
    return report


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A world-traversable temp dir with a short path: AF_UNIX paths are at most 108
    bytes, and clients run as other uids must reach the sockets in it."""
    path = Path(tempfile.mkdtemp(prefix="vmt-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
