"""Socket activation for real: systemd as PID 1 holds the socket, starts the agent on demand.

The container and its options: tests/e2e/box.py; the session fixture:
tests/e2e/conftest.py (which records what the first connection did).
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.box import SOCKET, SystemdBox, wait_until
from tests.e2e.conftest import TIMERS

pytestmark = pytest.mark.e2e

#: `vm-agentctl health` exits 0/1/2 for OK/WARN/CRIT: each is an answer.
ANSWERED = (0, 1, 2)


def _main_pid(box: SystemdBox) -> int:
    return int(box.show("vm-agent.service", "MainPID")["MainPID"])


def _agent_processes(box: SystemdBox) -> str:
    return box.run(["pgrep", "-af", "vm-agent serve"], check=False).out.strip()


def test_make_install_enabled_the_socket_and_the_timers(box: SystemdBox) -> None:
    assert "install: done" in box.install_output
    assert box.run(["systemctl", "is-enabled", "vm-agent.socket"]).out.strip() == "enabled"
    enabled = box.run(["systemctl", "is-enabled", *TIMERS], check=False).out.split()
    assert enabled == ["enabled"] * len(TIMERS), dict(zip(TIMERS, enabled, strict=False))


def test_nothing_runs_until_the_first_connection(box: SystemdBox) -> None:
    facts = box.first_contact
    if facts["timer_fired"]:  # see conftest._first_contact
        print(f"note: {facts['timer_fired']} fired during the install; agent stopped first")
    assert facts["socket_before"] == "active"
    assert facts["service_before"] == "inactive"
    assert facts["procs_before"] == ""
    health = facts["health"]
    assert health.rc in ANSWERED, repr(health)
    assert json.loads(health.out)["sampled_at"]
    after = facts["service_after"]
    assert after["ActiveState"] == "active"
    assert int(after["MainPID"]) > 0
    assert after["TriggeredBy"] == "vm-agent.socket"
    version = json.loads(facts["version"])
    assert version["socket_activated"] is True
    assert version["pid"] == int(after["MainPID"])


def test_stop_leaves_the_socket_listening_and_the_next_request_starts_it(
        box: SystemdBox) -> None:
    box.run(["vm-agentctl", "health"], check=False)  # running, whatever ran before
    old_pid = _main_pid(box)
    assert old_pid > 0
    box.run(["systemctl", "stop", "vm-agent.service"], timeout_s=60)
    assert box.run(["systemctl", "is-active", "vm-agent.service"], check=False).out.strip() \
        == "inactive"
    assert box.show("vm-agent.socket", "ActiveState", "SubState") == {
        "ActiveState": "active", "SubState": "listening"}
    box.run(["test", "-S", SOCKET])
    assert _agent_processes(box) == ""
    health = box.run(["vm-agentctl", "health"], check=False, timeout_s=60)
    assert health.rc in ANSWERED, repr(health)
    new_pid = _main_pid(box)
    assert new_pid not in (0, old_pid)
    assert box.show("vm-agent.service", "ActiveState")["ActiveState"] == "active"


# Sequential requests (one connection each) across the restart, plus a burst of
# parallel ones sent while the old process stops and the new one starts: those
# wait in the listening socket's backlog, which systemd keeps open meanwhile.
_RESTART_SCRIPT = r"""
sock=%(sock)s
req() { curl -s -m 30 --unix-socket "$sock" -o /dev/null -w '%%{http_code}\n' \
        http://localhost/v1/version; }
i=0
( while [ $i -lt %(sequential)d ]; do req; i=$((i+1)); sleep 0.05; done ) >/tmp/e2e-seq &
loop=$!
sleep 0.5
systemctl restart --no-block vm-agent.service
j=0
while [ $j -lt %(burst)d ]; do req >/tmp/e2e-burst.$j & j=$((j+1)); done
wait
cat /tmp/e2e-seq /tmp/e2e-burst.*
rm -f /tmp/e2e-seq /tmp/e2e-burst.*
"""


def test_restart_loses_no_queued_request(box: SystemdBox) -> None:
    box.run(["vm-agentctl", "health"], check=False)
    old_pid = _main_pid(box)
    sequential, burst = 40, 20
    done = box.sh(_RESTART_SCRIPT % {"sock": SOCKET, "sequential": sequential, "burst": burst},
                  timeout_s=120)
    codes = done.out.split()
    assert len(codes) == sequential + burst, repr(done)
    assert set(codes) == {"200"}, repr(done)
    new_pid = wait_until(lambda: (p := _main_pid(box)) not in (0, old_pid) and p,
                         timeout_s=30, what="a new MainPID after the restart")
    assert new_pid != old_pid
    assert box.show("vm-agent.service", "ActiveState")["ActiveState"] == "active"
