"""The agent's metrics textfile: values, persistent counters, atomic replacement."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.containers.history import KEEP_S, RestartRecord, Trigger, WatchdogHistory
from agent.jobs.base import StepResult
from agent.jobs.records import RunRecords
from agent.metrics_export import Snapshot, render, write_textfile
from agent.metrics_store import JobLast, advance_totals, job_lasts
from agent.store import Store

T0 = 1_790_000_000.0
FULL = Snapshot(
    steal_percent=2.5, docker_up=True, unhealthy=3, score=71,
    last_run_at={("cleanup", "standard"): T0, ("cleanup", "weekly"): T0 - 86400,
                 ("watchdog", "standard"): T0 - 60},
    jobs=(JobLast("cleanup", "partial", 42.25), JobLast("watchdog", "ok", 0.5)),
    cleanup_last_freed_bytes=1_234_567, cleanup_freed_bytes_total=9_876_543_210,
    watchdog_restarts_total=7, alerts={"sent": 11, "failed": 2, "pending": 1},
    projected={"db": 2.5e10, "web": 1e6})


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_every_series_carries_its_input() -> None:
    got = samples(render(FULL).decode())
    expected: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
        ("vmagent_cpu_steal_percent", ()): 2.5,
        ("vmagent_docker_up", ()): 1.0,
        ("vmagent_containers_unhealthy", ()): 3.0,
        ("vmagent_score", ()): 71.0,
        ("vmagent_cleanup_last_freed_bytes", ()): 1_234_567.0,
        ("vmagent_job_last_run_timestamp_seconds", (("job", "cleanup"), ("mode", "standard"))): T0,
        ("vmagent_job_last_run_timestamp_seconds", (("job", "cleanup"), ("mode", "weekly"))):
            T0 - 86400,
        ("vmagent_job_last_run_timestamp_seconds", (("job", "watchdog"), ("mode", "standard"))):
            T0 - 60,
        **{("vmagent_job_last_status", (("job", "cleanup"), ("status", s))): float(s == "partial")
           for s in ("ok", "partial", "failed", "skipped")},
        **{("vmagent_job_last_status", (("job", "watchdog"), ("status", s))): float(s == "ok")
           for s in ("ok", "partial", "failed", "skipped")},
        ("vmagent_job_last_duration_seconds", (("job", "cleanup"),)): 42.25,
        ("vmagent_job_last_duration_seconds", (("job", "watchdog"),)): 0.5,
        ("vmagent_cleanup_freed_bytes_total", ()): 9_876_543_210.0,
        ("vmagent_watchdog_restarts_total", ()): 7.0,
        ("vmagent_alerts_sent_total", ()): 11.0,
        ("vmagent_alerts_failed_total", ()): 2.0,
        ("vmagent_container_projected_write_bytes_per_day", (("container", "db"),)): 2.5e10,
        ("vmagent_container_projected_write_bytes_per_day", (("container", "web"),)): 1e6,
    }
    assert got == expected
    assert "_created" not in render(FULL).decode()  # counters carry no per-write creation time


def test_unknown_inputs_are_left_out_not_zero() -> None:
    assert render(Snapshot()) == b""
    down = samples(render(Snapshot(steal_percent=0.0, docker_up=False)).decode())
    assert down == {("vmagent_cpu_steal_percent", ()): 0.0, ("vmagent_docker_up", ()): 0.0}


def finished_cleanup(records: RunRecords, freed: int, *, at: float, dry_run: bool = False,
                     status: str = "ok", mode: str = "standard", job: str = "cleanup") -> int:
    rid = records.start(job=job, mode=mode, dry_run=dry_run, trigger="timer", peer=None,
                        pid=1, now=at)
    records.add_step(rid, StepResult("docker_build_cache", "ok", freed_bytes=freed))
    records.finish(rid, status=status, reason=None, disk_after=None, now=at + 30)
    return rid


def test_cleanup_total_counts_once_skips_dry_runs_and_survives_pruning(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    records = RunRecords(store)
    finished_cleanup(records, 100, at=T0)
    finished_cleanup(records, 5000, at=T0 + 100, dry_run=True)
    finished_cleanup(records, 20, at=T0 + 200, status="partial")
    assert advance_totals(store)["cleanup_freed_bytes"] == 120
    assert advance_totals(store)["cleanup_freed_bytes"] == 120  # counted once
    running = records.start(job="cleanup", mode="weekly", dry_run=False, trigger="api",
                            peer=None, pid=1, now=T0 + 300)
    records.add_step(running, StepResult("apt", "ok", freed_bytes=7))
    assert advance_totals(store)["cleanup_freed_bytes"] == 120  # not until it finishes
    records.finish(running, status="ok", reason=None, disk_after=None, now=T0 + 400)
    assert records.prune("cleanup", keep_days=1, keep_runs=1, now=T0 + 400) == 3
    assert advance_totals(store)["cleanup_freed_bytes"] == 127  # pruning never lowers it


def test_watchdog_restarts_total_counts_watchdog_restarts_only(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    history = WatchdogHistory(store)
    assert advance_totals(store)["watchdog_restarts"] == 0
    triggers: tuple[Trigger, ...] = ("watchdog", "operator", "watchdog")
    for i, trigger in enumerate(triggers):
        history.record_restart(RestartRecord(T0 + i, f"c{i}", f"id{i}", trigger, 3, "ok", 1.0))
    assert advance_totals(store)["watchdog_restarts"] == 2
    # a restart 30+ days later prunes the old records; the counter still only goes up
    history.record_restart(RestartRecord(T0 + KEEP_S + 10, "c9", "id9", "watchdog", 3,
                                         "failed", 1.0))
    assert len(history.restarts()) == 1
    assert advance_totals(store)["watchdog_restarts"] == 3


def test_job_lasts_per_mode_per_job_and_last_freed(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    records = RunRecords(store)
    finished_cleanup(records, 10, at=T0, mode="weekly")
    finished_cleanup(records, 30, at=T0 + 1000)
    finished_cleanup(records, 999, at=T0 + 2000, dry_run=True, status="failed")
    finished_cleanup(records, 0, at=T0 + 50, job="watchdog")
    records.start(job="cleanup", mode="monthly", dry_run=False, trigger="api", peer=None,
                  pid=1, now=T0 + 3000)  # still running: not a "last run" yet
    at, lasts, freed = job_lasts(store)
    # a manual dry run is no run of the job: it must not flip a "last run ok" alert
    assert at == {("cleanup", "weekly"): T0 + 30, ("cleanup", "standard"): T0 + 1030,
                  ("watchdog", "standard"): T0 + 80}
    assert lasts == (JobLast("cleanup", "ok", 30.0), JobLast("watchdog", "ok", 30.0))
    assert freed == 30  # the dry run's "would free" is not freed
    refused = records.start(job="cleanup", mode="standard", dry_run=False, trigger="timer",
                            peer=None, pid=1, now=T0 + 4000, status="skipped",
                            reason="hold active: disk swap")
    assert refused > 0
    at, lasts, freed = job_lasts(store)
    assert lasts[0] == JobLast("cleanup", "skipped", 0.0)  # a forgotten hold shows
    assert freed == 30  # a refused run freed nothing: the last real figure stays


def test_textfile_is_replaced_atomically_and_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "vm-agent.prom"
    expected = render(FULL)
    seen: list[bytes] = []
    errors: list[OSError] = []
    stop = threading.Event()

    def reader() -> None:  # started after the first write: the file must always be there
        while not stop.is_set():
            try:
                seen.append(target.read_bytes())
            except OSError as err:
                errors.append(err)

    old = os.umask(0o027)  # the unit's UMask=
    try:
        write_textfile(str(target), FULL)
        os.link(target, tmp_path / "first")  # keeps the first inode alive (no reuse)
        thread = threading.Thread(target=reader)
        thread.start()
        for _ in range(200):
            write_textfile(str(target), FULL)
        stop.set()
        thread.join()
    finally:
        os.umask(old)
    assert errors == []
    assert len(seen) > 10 and all(body == expected for body in seen)  # never a partial file
    # replaced by rename, not rewritten in place: the first file is untouched
    assert not os.path.samefile(target, tmp_path / "first")
    assert (tmp_path / "first").read_bytes() == expected
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "vm-agent.prom"]  # no temp


def test_a_missing_folder_raises_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_textfile(str(tmp_path / "absent" / "vm-agent.prom"), FULL)
    assert list(tmp_path.iterdir()) == []
