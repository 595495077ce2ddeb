"""Cron schedules as Linux cron fires them, and the legacy crontab block."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.config import ScheduleConfig
from agent.crontab import AT_BOOT, host_zone, legacy_crontab, parse_block
from agent.errors import ConfigError
from agent.schedule import (
    SCHEDULED,
    job_schedules,
    next_run_text,
    next_runs,
    parse_cron,
    timer_unit,
    validate_schedule,
)

BERLIN = "Europe/Berlin"  # 2026: CET->CEST 29 Mar 01:00 UTC, CEST->CET 25 Oct 01:00 UTC
NEW_YORK = "America/New_York"  # 2026: 8 Mar 07:00 UTC forward, 1 Nov 06:00 UTC back


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def hm(times: list[datetime]) -> list[str]:
    return [t.strftime("%m-%d %H:%M") for t in times]


# --- defaults and validation ------------------------------------------------------

def test_defaults_in_utc() -> None:
    s = ScheduleConfig()
    after = utc(2026, 11, 29, 20, 0)  # a Sunday
    assert next_run_text(s.cleanup_standard, "UTC", after) == "2026-11-30T03:30:00Z"
    assert next_run_text(s.cleanup_weekly, "UTC", after) == "2026-12-06T04:00:00Z"
    assert next_run_text(s.cleanup_monthly, "UTC", after) == "2026-12-01T04:30:00Z"
    assert next_run_text(s.watchdog, "UTC", after) == "2026-11-29T20:10:00Z"
    assert next_run_text(s.healthcheck, "UTC", after) == "2026-11-30T07:00:00Z"
    assert next_run_text(s.digest, "UTC", after) == "2026-11-30T08:00:00Z"


@pytest.mark.parametrize("expr", ["61 * * * *", "* * *", "* * * * * *", "@daily", "*/0 * * * *",
                                  "0 0 * * 8", "0 25 * * *", "x y z w v"])
def test_bad_expression_names_the_key(expr: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_schedule(replace(ScheduleConfig(), cleanup_weekly=expr))
    assert err.value.key == "cleanup_weekly"


def test_bad_timezone_names_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        validate_schedule(replace(ScheduleConfig(), timezone="Mars/Olympus"))
    assert err.value.key == "timezone"


def test_names_and_sunday_seven() -> None:
    assert parse_cron("0 4 * * sun").day_or is False
    assert hm(next_runs("0 4 * * 7", "UTC", utc(2026, 11, 29, 5), 1)) == ["12-06 04:00"]


# --- day-of-month and day-of-week ---------------------------------------------------

def test_both_day_fields_restricted_are_ored() -> None:
    # the 1st and 15th of the month, and every Friday (June 2026: Fridays 5, 12, 19, 26)
    runs = next_runs("0 6 1,15 * fri", "UTC", utc(2026, 5, 31), 6)
    assert [t.day for t in runs] == [1, 5, 12, 15, 19, 26]


def test_star_step_day_field_counts_as_unrestricted() -> None:
    # Vixie cron: a field starting with '*' is "*": the other day field alone decides (AND)
    runs = next_runs("0 0 */2 * 1", "UTC", utc(2026, 6, 1), 4)
    assert all(t.weekday() == 0 and t.day % 2 == 1 for t in runs)
    assert [t.day for t in runs] == [15, 29, 13, 27]


# --- DST ------------------------------------------------------------------------------

def test_fixed_time_in_spring_forward_gap_runs_once_at_the_jump() -> None:
    runs = next_runs("30 2 * * *", BERLIN, utc(2026, 3, 27, 12), 3)
    # 02:30 CET on the 28th; on the 29th 02:30 does not exist: at 03:00 CEST; then 02:30 CEST
    assert hm(runs) == ["03-28 01:30", "03-29 01:00", "03-30 00:30"]


def test_fixed_time_in_fall_back_runs_once() -> None:
    runs = next_runs("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 3)
    assert hm(runs) == ["10-25 00:30", "10-26 01:30", "10-27 01:30"]


def test_wildcard_job_follows_the_clock_across_dst() -> None:
    fall = next_runs("*/30 * * * *", BERLIN, utc(2026, 10, 24, 23, 45), 6)
    assert hm(fall) == ["10-25 00:00", "10-25 00:30", "10-25 01:00", "10-25 01:30",
                        "10-25 02:00", "10-25 02:30"]  # the repeated 02:xx hour runs twice
    spring = next_runs("0 * * * *", BERLIN, utc(2026, 3, 28, 23, 30), 3)
    assert hm(spring) == ["03-29 00:00", "03-29 01:00", "03-29 02:00"]  # 02:00 CET skipped


def test_new_york_daily_job_across_both_changes() -> None:
    spring = next_runs("15 2 * * *", NEW_YORK, utc(2026, 3, 7, 12), 3)
    # 02:15 EST on the 7th; the 8th has no 02:15: runs at 03:00 EDT (07:00 UTC); then EDT
    assert hm(spring) == ["03-08 07:00", "03-09 06:15", "03-10 06:15"]
    fall = next_runs("30 1 * * *", NEW_YORK, utc(2026, 10, 31, 12), 2)
    assert fall == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]  # once, first 01:30


# --- never -------------------------------------------------------------------------------

@pytest.mark.parametrize("expr", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"])
def test_never_firing(expr: str) -> None:
    assert next_runs(expr, "UTC", utc(2026, 1, 1), 3) == []
    assert next_run_text(expr, BERLIN, utc(2026, 1, 1)) == "never"


def test_leap_day_is_not_never() -> None:
    assert next_run_text("0 0 29 2 *", "UTC", utc(2026, 1, 1)) == "2028-02-29T00:00:00Z"


# --- the job table -----------------------------------------------------------------------

def test_job_schedules_table() -> None:
    cfg = replace(ScheduleConfig(), cleanup_monthly="0 0 30 2 *")
    rows = {(r.job, r.mode): r for r in job_schedules(cfg, utc(2026, 11, 29, 20))}
    assert len(rows) == len(SCHEDULED)
    assert rows[("cleanup", "monthly")].next_run == "never"
    assert rows[("cleanup", "weekly")].timer == "vm-agent-cleanup-weekly.timer"
    assert rows[("digest", None)].timer == timer_unit("digest", None) == "vm-agent-digest.timer"
    assert [r.mode for r in job_schedules(cfg, utc(2026, 1, 1), "cleanup")] == [
        "standard", "weekly", "monthly"]


# --- the legacy crontab --------------------------------------------------------------------

ROOT_CRONTAB = """\
# m h dom mon dow command
MAILTO=""
15 * * * * /usr/local/bin/unrelated.sh
# bytelyst-vm-maintenance BEGIN (managed by setup-vm.sh)
SHELL=/bin/bash
# nightly cleanup
30 3 * * * /usr/local/bin/vm-cleanup.sh >> /var/log/vm-cleanup.log 2>&1
*/10 * * * * /usr/local/bin/docker-watchdog.sh >> /var/log/docker-watchdog.log 2>&1
# 0 7 * * * /usr/local/bin/vm-health-check.sh >> /var/log/vm-health-check.log 2>&1
@reboot /usr/local/bin/vm-cleanup.sh --boot
@weekly /usr/local/bin/vm-digest.sh
0 0 30 2 * /usr/local/bin/never.sh
61 * * * * /usr/local/bin/broken.sh
# bytelyst-vm-maintenance END
0 1 * * * /usr/local/bin/after-the-block.sh
"""


def test_legacy_block_entries() -> None:
    entries = parse_block(ROOT_CRONTAB, source="root", system=False, tz=ZoneInfo("UTC"),
                          now=utc(2026, 11, 29, 20, 5))
    got = [(e.line, e.schedule, e.enabled, e.next_run, e.error is not None) for e in entries]
    assert got == [
        (7, "30 3 * * *", True, "2026-11-30T03:30:00Z", False),
        (8, "*/10 * * * *", True, "2026-11-29T20:10:00Z", False),
        (9, "0 7 * * *", False, None, False),
        (10, "@reboot", True, AT_BOOT, False),
        (11, "@weekly", True, "2026-12-06T00:00:00Z", False),
        (12, "0 0 30 2 *", True, "never", False),
        (13, "61 * * * * /usr/local/bin/broken.sh", True, None, True),
    ]
    assert entries[0].command == "/usr/local/bin/vm-cleanup.sh >> /var/log/vm-cleanup.log 2>&1"
    assert entries[3].command == "/usr/local/bin/vm-cleanup.sh --boot"


def test_system_crontab_block_and_missing_files(tmp_path: Path) -> None:
    etc = tmp_path / "crontab"
    etc.write_text("17 * * * * root cd / && run-parts --report /etc/cron.hourly\n"
                   "# bytelyst-vm-maintenance\n"
                   "0 7 * * * root /usr/local/bin/vm-health-check.sh\n"
                   "@reboot root /usr/local/bin/vm-cleanup.sh --boot\n"
                   "# bytelyst-vm-maintenance\n"
                   "0 8 * * * root /usr/local/bin/outside.sh\n")
    entries = legacy_crontab([str(tmp_path / "missing"), str(etc)],
                             tz=ZoneInfo(BERLIN), now=utc(2026, 11, 29, 20))
    assert [(e.user, e.command, e.next_run) for e in entries] == [
        ("root", "/usr/local/bin/vm-health-check.sh", "2026-11-30T06:00:00Z"),
        ("root", "/usr/local/bin/vm-cleanup.sh --boot", AT_BOOT)]


def test_no_block_is_empty(tmp_path: Path) -> None:
    plain = tmp_path / "root"
    plain.write_text("30 3 * * * /usr/local/bin/vm-cleanup.sh\n")
    assert legacy_crontab([str(plain)], tz=ZoneInfo("UTC"), now=utc(2026, 1, 1)) == []


def test_unterminated_block_runs_to_end_of_file() -> None:
    text = "# bytelyst-vm-maintenance begin\n5 4 * * * /x.sh\n"
    entries = parse_block(text, source="f", system=False, tz=ZoneInfo("UTC"),
                          now=utc(2026, 1, 1))
    assert [e.command for e in entries] == ["/x.sh"]


def test_host_zone(tmp_path: Path) -> None:
    assert str(host_zone(tmp_path)) == "UTC"
    (tmp_path / "localtime").symlink_to("/usr/share/zoneinfo/Europe/Berlin")
    assert str(host_zone(tmp_path)) == BERLIN
    (tmp_path / "timezone").write_text("America/New_York\n")
    assert str(host_zone(tmp_path)) == NEW_YORK
