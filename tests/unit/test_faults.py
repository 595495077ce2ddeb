"""agent.faults: the test-only SIGUSR2 hang is off unless VMAGENT_TEST_FAULTS=1."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from agent import faults

# A child that installs the switch with the given environment, then SIGUSR2s itself.
_CHILD = """
import asyncio, os, signal, sys, time
from agent import faults

async def main():
    loop = asyncio.get_running_loop()
    print(faults.install(loop, hang_s=0.5), flush=True)
    started = time.monotonic()
    os.kill(os.getpid(), signal.SIGUSR2)
    await asyncio.sleep(0.05)  # the handler runs in the loop: it blocks here
    print(f"{time.monotonic() - started:.2f}", flush=True)

asyncio.run(main())
"""


def _child(env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV_VAR}
    if env_value is not None:
        env[faults.ENV_VAR] = env_value
    return subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                          text=True, timeout=30, check=False)


@pytest.mark.parametrize("environ", [{}, {"VMAGENT_TEST_FAULTS": "0"},
                                     {"VMAGENT_TEST_FAULTS": "yes"},
                                     {"VMAGENT_TEST_FAULTS": ""}])
def test_enabled_only_for_exactly_1(environ: dict[str, str]) -> None:
    assert faults.enabled(environ) is False


def test_enabled_with_1() -> None:
    assert faults.enabled({"VMAGENT_TEST_FAULTS": "1"}) is True


async def test_install_off_by_default_leaves_sigusr2_alone() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    assert faults.install(asyncio.get_running_loop(), environ={}) is False
    assert signal.getsignal(signal.SIGUSR2) == before


def test_off_sigusr2_keeps_its_default_action() -> None:
    """Without the variable SIGUSR2 terminates the process, as it always did."""
    done = _child(None)
    assert done.stdout.splitlines() == ["False"]
    assert done.returncode == -signal.SIGUSR2


def test_on_sigusr2_blocks_the_event_loop() -> None:
    started = time.monotonic()
    done = _child("1")
    assert done.returncode == 0, done.stderr
    installed, blocked_s = done.stdout.split()
    assert installed == "True"
    assert float(blocked_s) >= 0.45  # the 0.05 s sleep took the whole hang
    assert time.monotonic() - started < 20
