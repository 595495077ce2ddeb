"""The shipped timers fire when the config's default cron expressions say, and verify clean.

``systemd-analyze calendar --iterations=N --base-time=T`` gives the next N
elapses of each timer's OnCalendar= lines; agent.schedule.next_runs gives
the next N runs of the matching ``jobs.schedule`` default.  They must agree
from several base times (mid-month, a month end, a leap-year February, a
year end).  Then ``systemd-analyze verify`` on every timer and service.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.config import ScheduleConfig
from agent.schedule import SCHEDULED, next_runs, timer_unit

pytestmark = pytest.mark.integration

UNITS = Path(__file__).resolve().parents[2] / "systemd"
ANALYZE = shutil.which("systemd-analyze")
BASES = (datetime(2026, 11, 29, 20, 7, 13, tzinfo=UTC), datetime(2026, 1, 31, 23, 55, tzinfo=UTC),
         datetime(2028, 2, 28, 12, 0, tzinfo=UTC), datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
ITERATIONS = 14
_ELAPSE = re.compile(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")

if ANALYZE is None:
    pytest.skip("systemd-analyze not installed (make deps)", allow_module_level=True)


def directives(path: Path) -> dict[str, list[str]]:
    """``{key: [values]}`` of a unit file (comments skipped)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def calendar(spec: str, base: datetime, n: int) -> list[datetime]:
    out = subprocess.run(
        [str(ANALYZE), "calendar", f"--iterations={n}",
         f"--base-time={base.strftime('%Y-%m-%d %H:%M:%S')} UTC", spec],
        capture_output=True, text=True, check=True, env={**os.environ, "TZ": "UTC"}).stdout
    return [datetime.strptime(m, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            for m in _ELAPSE.findall(out)]


def timer_times(specs: list[str], base: datetime, n: int) -> list[datetime]:
    """The first ``n`` elapses of a timer with these OnCalendar= lines (their union)."""
    return sorted({t for spec in specs for t in calendar(spec, base, n)})[:n]


def test_one_timer_and_service_per_scheduled_job() -> None:
    expected = {timer_unit(job, mode) for _key, job, mode in SCHEDULED}
    shipped = {p.name for p in UNITS.glob("vm-agent-*.timer")}
    assert shipped == expected
    services = {p.name for p in UNITS.glob("vm-agent-*.service")}
    assert services == {t.replace(".timer", ".service") for t in expected}


@pytest.mark.parametrize(("key", "job", "mode"), SCHEDULED, ids=[k for k, _, _ in SCHEDULED])
def test_timer_matches_default_cron(key: str, job: str, mode: str | None) -> None:
    timer = UNITS / timer_unit(job, mode)
    t = directives(timer)
    assert t["Persistent"] == ["true"]
    service_name = timer.name.replace(".timer", ".service")
    assert t.get("Unit", [service_name]) == [service_name]
    argv = directives(UNITS / service_name)["ExecStart"][0].split()
    assert argv == ["/usr/local/bin/vm-agentctl", "run", job,
                    *(["--mode", mode] if mode else []), "--trigger", "timer"]
    expr = getattr(ScheduleConfig(), key)
    for base in BASES:
        assert timer_times(t["OnCalendar"], base, ITERATIONS) == \
            next_runs(expr, "UTC", base, ITERATIONS), (key, base)


def test_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on copies whose ExecStart= names an existing stub."""
    stub = tmp_path / "vm-agentctl"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for unit in [*UNITS.glob("vm-agent-*.timer"), *UNITS.glob("vm-agent-*.service"),
                 UNITS / "vm-agent.socket"]:
        text = unit.read_text().replace("/usr/local/bin/vm-agentctl", str(stub))
        (tmp_path / unit.name).write_text(text)
    (tmp_path / "vm-agent.service").write_text(
        (UNITS / "vm-agent.service").read_text().replace("/usr/local/bin/vm-agent ", f"{stub} "))
    names = sorted(str(p) for p in tmp_path.glob("vm-agent-*"))
    done = subprocess.run([str(ANALYZE), "verify", "--man=no", *names], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "vm-agent" not in done.stdout + done.stderr, done.stdout + done.stderr
