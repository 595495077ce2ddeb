"""vm-agentctl's job renderings (MB = 10^6 bytes) and ``run`` exit statuses."""

from __future__ import annotations

import pytest

from agent import cli, clifmt, jobsfmt


def record(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": 7, "job": "cleanup", "mode": "weekly", "dry_run": False, "trigger": "timer",
        "peer": None, "started_at": "2026-11-29T04:00:00Z", "finished_at": "2026-11-29T04:00:21Z",
        "duration_s": 21.4, "status": "partial", "reason": "1 of 2 steps failed: apt",
        "disk_before": [{"mount": "/", "used_percent": 71.25}],
        "disk_after": [{"mount": "/", "used_percent": 68.9}], "freed_bytes": 1_834_200_000,
        "steps": [{"name": "docker_build_cache", "status": "ok", "freed_bytes": 1_834_200_000,
                   "duration_s": 3.1, "detail": "pruned", "error": None},
                  {"name": "apt", "status": "failed", "freed_bytes": 0, "duration_s": 0.2,
                   "detail": "", "error": "exit 100"}]}
    return {**base, **kw}


def test_run_record_shows_mb_steps_and_disks() -> None:
    text = clifmt.render("run", record())
    assert text.splitlines()[0] == ("cleanup (weekly) run 7: partial, freed 1834.2 MB in 21.4 s "
                                    "(1 of 2 steps failed: apt)")
    assert "exit 100" in text and "disk /: 71.2 % used -> 68.9 % used" in text
    assert "would free 0.0 MB" in clifmt.render("run", record(dry_run=True, freed_bytes=0))


def test_runs_is_a_table_and_empty_is_said() -> None:
    assert "1834.2 MB" in clifmt.render("runs", [record()])
    assert clifmt.render("runs", []) == "no runs recorded"


def test_run_exit_statuses() -> None:
    assert [cli._run_exit({"status": s}) for s in ("ok", "running", "partial", "failed",
                                                   "skipped")] == [0, 0, 1, 2, 2]


def test_a_started_run_says_how_to_follow_it() -> None:
    text = jobsfmt.run_record({"id": 7, "status": "running", "job": "cleanup"})
    assert text == ("run 7 started (running); follow it with: vm-agentctl runs cleanup, "
                    "or GET /v1/runs/7")


def test_version_prints_yes_no_not_python_booleans() -> None:
    text = clifmt.render("version", {"version": "0.1.0", "socket_activated": False,
                                     "config_path": None})
    assert "False" not in text and "None" not in text
    assert "socket_activated  no" in text and "config_path       -" in text


def test_ctl_has_a_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("vm-agentctl ")


def test_health_puts_dockers_reason_under_the_table() -> None:
    sample = {"status": "WARN", "sampled_at": "2026-11-30T01:00:00Z",
              "levels": {"docker_available": "WARN"},
              "cpu": {"cores": 2, "steal_percent": 0.0, "iowait_percent": 0.0, "window_s": 1.0},
              "memory": {"available_bytes": 1, "total_bytes": 2, "swap_used_bytes": 0,
                         "swap_total_bytes": 0, "swap_cached_bytes": 0},
              "load": {"load1_per_core": 0.1}, "disks": [],
              "docker": {"available": False, "error": "socket not found: x; " + "why " * 40}}
    lines = clifmt.render("health", sample).splitlines()
    assert lines[-1].startswith("docker: socket not found: x; why")
    assert max(len(line) for line in lines[:-1]) < 80  # the long reason widens no row
    assert "unavailable (why: below)" in lines[-2]


def test_jobs_shows_every_schedule_and_the_legacy_lines_state() -> None:
    data = {"jobs": [
        {"name": "cleanup", "available": True, "modes": ["standard", "weekly", "monthly"],
         "schedules": [{"mode": "standard", "schedule": "30 3 * * *",
                        "next_run": "2026-12-01T03:30:00Z"},
                       {"mode": "weekly", "schedule": "0 4 * * 0",
                        "next_run": "2026-12-06T04:00:00Z"}],
         "last_run": None}],
        "legacy_crontab": [
            {"source": "/etc/crontab", "line": 12, "schedule": "*/5 * * * *",
             "command": "/usr/local/bin/docker-watchdog.sh", "enabled": False,
             "next_run": None, "error": None},
            {"source": "/etc/crontab", "line": 13, "schedule": "", "command": "",
             "enabled": True, "next_run": None, "error": "not a cron line"}]}
    text = jobsfmt.jobs(data)
    assert "30 3 * * * (standard)" in text and "0 4 * * 0 (weekly)" in text
    assert "standard,weekly,monthly" in text
    assert "commented out" in text and "/etc/crontab:12" in text
    assert "unparsable (not a cron line)" in text


def test_run_help_lists_the_registered_jobs_and_modes() -> None:
    from agent.config import Config
    from agent.jobs.catalog import build_jobs
    listed = ", ".join(name if len(job.modes) == 1 else
                       f"{name} (modes {', '.join(job.modes)})"
                       for name, job in build_jobs(Config()).items())
    assert listed == cli.JOBS_HELP
