"""Each shipped timer's service, started by hand, runs its job through the socket.

For every ``systemd/vm-agent-<x>.timer`` the test starts the service it
activates (``systemctl start vm-agent-<x>.service``, as the timer would) and
checks: exactly one new run record of that job (and mode), with trigger
``timer`` and, as peer, a process of that service (the vm-agentctl the unit
ran: ExecMainPID, so the run went through the socket); and the unit's exit status is the
documented one for the record's status (0 ok, 1 partial, 2 failed or
skipped).  Jobs without config (no backup repos, no Telegram chat) may
record that they had nothing to do; they still leave a record.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.box import SystemdBox
from tests.e2e.conftest import REPO, TIMERS

pytestmark = pytest.mark.e2e

_EXEC = re.compile(r"^ExecStart=\S*vm-agentctl run (\S+)(?: --mode (\S+))?", re.MULTILINE)
#: The documented exit status of `vm-agentctl run` per record status.
EXIT_FOR = {"ok": 0, "partial": 1, "failed": 2, "skipped": 2}


def _job_of(service: str) -> tuple[str, str | None]:
    match = _EXEC.search((REPO / "systemd" / service).read_text())
    assert match, f"systemd/{service} has no `vm-agentctl run JOB` ExecStart="
    return match.group(1), match.group(2)


def _runs(box: SystemdBox, job: str) -> list[dict[str, object]]:
    runs: list[dict[str, object]] = box.json(["vm-agentctl", "--json", "runs", job,
                                              "--limit", "500"])
    return runs


@pytest.mark.parametrize("timer", TIMERS)
def test_timer_service_runs_its_job_and_leaves_a_record(box: SystemdBox, timer: str) -> None:
    service = Path(timer).with_suffix(".service").name
    job, mode = _job_of(service)
    before = {r["id"] for r in _runs(box, job)}
    started = box.run(["systemctl", "start", service], check=False, timeout_s=600)
    props = box.show(service, "ExecMainStatus", "ExecMainPID", "Result")
    new = [r for r in _runs(box, job) if r["id"] not in before]
    assert len(new) == 1, f"{service}: {len(new)} new records of {job}; {started!r}"
    record = new[0]
    assert record["job"] == job
    if mode is not None:
        assert record["mode"] == mode
    assert record["trigger"] == "timer"
    expected = EXIT_FOR[str(record["status"])]
    assert int(props["ExecMainStatus"]) == expected, (record, props)
    assert (started.rc == 0) == (expected == 0), repr(started)
    peer_pid = int(re.findall(r"pid=(\d+)", str(record["peer"]))[0])
    assert peer_pid == int(props["ExecMainPID"]), (record["peer"], props)
