"""Test-only fault switches: off unless the environment says ``VMAGENT_TEST_FAULTS=1``.

The end-to-end tests (tests/e2e) prove that systemd's watchdog kills and
restarts an agent whose event loop hangs.  To make the loop hang on demand,
:func:`install` adds a SIGUSR2 handler that blocks the event loop thread
(``time.sleep``), so the ``WATCHDOG=1`` pings stop.  The switch exists only
when the service's environment sets ``VMAGENT_TEST_FAULTS=1`` (the e2e sets it
in a drop-in); otherwise nothing is installed and SIGUSR2 keeps its default
action (terminate, ``man 7 signal``).  The shipped units never set it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping
from typing import Final

log = logging.getLogger("vm-agent")

ENV_VAR: Final = "VMAGENT_TEST_FAULTS"
#: The signal that blocks the event loop when the switch is on.
HANG_SIGNAL: Final = signal.SIGUSR2
#: How long a hang lasts, seconds: far longer than any WatchdogSec= in use.
HANG_S: Final = 3600.0


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """True only when ``environ`` (default ``os.environ``) has ``VMAGENT_TEST_FAULTS=1``."""
    env = os.environ if environ is None else environ
    return env.get(ENV_VAR) == "1"


def install(loop: asyncio.AbstractEventLoop, *, environ: Mapping[str, str] | None = None,
            hang_s: float = HANG_S) -> bool:
    """Add the SIGUSR2 "hang the event loop for ``hang_s`` seconds" handler to ``loop``.

    Does nothing and returns False unless :func:`enabled`; returns True when
    the handler was added.  Must be called from the loop's (main) thread.
    """
    if not enabled(environ):
        return False
    loop.add_signal_handler(HANG_SIGNAL, _hang, hang_s)
    log.warning("%s=1: test fault switch on (SIGUSR2 blocks the event loop for %.0f s)",
                ENV_VAR, hang_s)
    return True


def _hang(hang_s: float) -> None:
    log.warning("SIGUSR2: blocking the event loop for %.0f s (test fault)", hang_s)
    time.sleep(hang_s)  # on purpose: the loop thread stops, so do the watchdog pings
