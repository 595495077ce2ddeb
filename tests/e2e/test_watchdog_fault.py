"""A hung event loop is killed by systemd's watchdog and the agent restarted.

The test-only fault switch (agent/faults.py) exists only with
``VMAGENT_TEST_FAULTS=1``; this test sets it in a drop-in together with a
short ``WatchdogSec=``, and removes the drop-in afterwards so that the other
tests see the shipped unit.  SIGUSR2 then blocks the event loop thread, the
``WATCHDOG=1`` pings stop, and systemd kills the process (SIGABRT) and
restarts it (Restart=on-failure, RestartSec=5s of the shipped unit).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.box import SystemdBox, wait_until

pytestmark = pytest.mark.e2e

DROPIN = "/etc/systemd/system/vm-agent.service.d/50-e2e-faults.conf"
WATCHDOG_S = 4
DROPIN_TEXT = f"""[Service]
Environment=VMAGENT_TEST_FAULTS=1
WatchdogSec={WATCHDOG_S}
"""


def _restart_agent(box: SystemdBox) -> dict[str, str]:
    box.run(["systemctl", "daemon-reload"])
    box.run(["systemctl", "reset-failed", "vm-agent.service"], check=False)
    box.run(["systemctl", "restart", "vm-agent.service"], timeout_s=60)
    return box.show("vm-agent.service", "MainPID", "NRestarts", "WatchdogUSec", "ActiveState")


@pytest.fixture
def faulty_agent(box: SystemdBox) -> Iterator[dict[str, str]]:
    """The agent restarted with the fault switch on; the shipped unit again afterwards."""
    box.write(DROPIN, DROPIN_TEXT)
    try:
        yield _restart_agent(box)
    finally:
        box.run(["rm", "-f", DROPIN])
        _restart_agent(box)


def test_hung_event_loop_is_killed_by_the_watchdog_and_restarted(
        box: SystemdBox, faulty_agent: dict[str, str]) -> None:
    before = faulty_agent
    assert before["ActiveState"] == "active"
    assert before["WatchdogUSec"] == f"{WATCHDOG_S}s"
    old_pid, old_restarts = int(before["MainPID"]), int(before["NRestarts"])
    switch = box.run(["journalctl", "--no-pager", "-o", "cat", f"_PID={old_pid}",
                      "-t", "vm-agent"]).out
    assert "test fault switch on" in switch
    started = time.monotonic()
    box.run(["systemctl", "kill", "--kill-who=main", "-s", "SIGUSR2", "vm-agent.service"])

    def restarted() -> dict[str, str] | None:
        now = box.show("vm-agent.service", "MainPID", "NRestarts", "ActiveState")
        moved = int(now["MainPID"]) not in (0, old_pid) and now["ActiveState"] == "active"
        return now if moved else None

    after = wait_until(restarted, timeout_s=WATCHDOG_S + 30, what="watchdog restart",
                       interval_s=0.5)
    reaction_s = time.monotonic() - started
    assert int(after["NRestarts"]) == old_restarts + 1
    unit_log = box.run(["journalctl", "--no-pager", "-o", "cat", "-u", "vm-agent.service",
                        "--since", "-2min"]).out
    assert "Watchdog timeout" in unit_log, unit_log[-3000:]
    assert "blocking the event loop" in unit_log
    health = box.run(["vm-agentctl", "health"], check=False, timeout_s=60)
    assert health.rc in (0, 1, 2), repr(health)
    print(f"watchdog: SIGUSR2 to a new active MainPID in {reaction_s:.1f} s "
          f"(WatchdogSec={WATCHDOG_S}, RestartSec=5s)")
