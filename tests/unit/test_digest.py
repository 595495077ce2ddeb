"""The weekly digest from the agent's records: exact figures, missing data said, once a week."""

from __future__ import annotations

import socket
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from agent.config import Config, PrometheusConfig, ThresholdsConfig
from agent.containers.history import RestartRecord, WatchdogHistory
from agent.host.history import HostHistory
from agent.host.model import (
    CpuSample,
    DiskSample,
    DockerSummary,
    HostSample,
    LoadSample,
    MemorySample,
)
from agent.jobs.base import StepResult
from agent.jobs.digest import (
    NO_DOCKER_WATCH,
    build_digest,
    dedupe_key,
    digest_text,
    iso_week,
    report_week,
    top_action,
)
from agent.jobs.digest_data import NO_AGENT_DATA, promql
from agent.jobs.records import RunRecords
from agent.notify.outbox import Outbox
from agent.store import Store

END = 1796025600.0  # 2026-11-30T08:00:00Z, a Monday (date -u -d @1796025600)
DAY = 86400.0
T = ThresholdsConfig()


def at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def host(when: str, *, steal: float, avail: int, swap: int, disks: dict[str, float],
         unhealthy: int | None) -> HostSample:
    docker = (DockerSummary(available=False, error="down") if unhealthy is None
              else DockerSummary(available=True, unhealthy=unhealthy))
    return HostSample(
        sampled_at=when, status="OK", levels={},
        cpu=CpuSample(cores=2, steal_percent=steal, iowait_percent=0.0, window_s=1.0),
        load=LoadSample(0.0, 0.0, 0.0, 0.0),
        memory=MemorySample(16 * 10**9, avail, 4 * 10**9, swap, 0),
        disks=tuple(DiskSample(m, 100, int(p), 100 - int(p), p) for m, p in disks.items()),
        docker=docker)


def run(records: RunRecords, job: str, mode: str, when: str, status: str, freed: int = 0,
        *, dry_run: bool = False) -> None:
    run_id = records.start(job=job, mode=mode, dry_run=dry_run, trigger="timer", peer=None,
                           pid=1, now=at(when))
    records.add_step(run_id, StepResult("s", "ok" if status == "ok" else "failed", freed))
    records.finish(run_id, status=status, reason=None, disk_after=None, now=at(when) + 5)


def restart(history: WatchdogHistory, name: str, when: str, *, trigger: str = "watchdog",
            result: str = "ok") -> None:
    history.record_restart(RestartRecord(at(when), name, name + "-id", trigger,  # type: ignore[arg-type]
                                         3, result, 1.0))  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "state")
    hist = HostHistory(s)
    hist.record(host("2026-11-24T10:00:05Z", steal=2.0, avail=4 * 10**9, swap=100 * 10**6,
                     disks={"/": 50.0}, unhealthy=1))
    hist.record(host("2026-11-24T10:30:00Z", steal=4.0, avail=2 * 10**9, swap=300 * 10**6,
                     disks={"/": 60.0}, unhealthy=0))
    hist.record(host("2026-11-25T03:00:00Z", steal=6.0, avail=3 * 10**9, swap=200 * 10**6,
                     disks={"/": 55.0, "/data": 20.0}, unhealthy=None))
    hist.record(host("2026-11-20T00:00:00Z", steal=90.0, avail=1, swap=9 * 10**9,
                     disks={"/": 99.0}, unhealthy=9))  # before the window
    rec = RunRecords(s)
    run(rec, "cleanup", "standard", "2026-11-24T03:30:00Z", "ok", 1_200_000_000)
    run(rec, "cleanup", "weekly", "2026-11-29T04:00:00Z", "partial", 300_000_000)
    run(rec, "cleanup", "standard", "2026-11-25T03:30:00Z", "ok", 5 * 10**9, dry_run=True)
    run(rec, "cleanup", "standard", "2026-11-22T03:30:00Z", "ok", 7 * 10**9)  # before
    rec.start(job="cleanup", mode="monthly", dry_run=False, trigger="api", peer=None, pid=1,
              status="skipped", reason="hold active", now=at("2026-11-26T00:00:00Z"))
    for status in ("ok", "failed", "partial"):
        run(rec, "backup-repair", "standard", "2026-11-26T12:00:00Z", status)
    run(rec, "backup-repair", "standard", "2026-11-26T12:00:00Z", "failed", dry_run=True)
    wd = WatchdogHistory(s)
    for name, when in (("api", "2026-11-24T01:00:00Z"), ("worker", "2026-11-25T01:00:00Z"),
                       ("api", "2026-11-28T01:00:00Z")):
        restart(wd, name, when)
    restart(wd, "db", "2026-11-28T02:00:00Z", trigger="operator")
    restart(wd, "gone", "2026-11-28T03:00:00Z", result="vanished")
    return s


async def test_digest_from_the_agents_records_has_exact_figures(store: Store) -> None:
    d = await build_digest(store, Config(), end=END)
    assert digest_text(d, T).splitlines() == [
        "vm-agent weekly digest 2026-W48 (2026-11-23 08:00 to 2026-11-30 08:00 UTC)",
        "Host figures from the agent's own samples (3 samples in 2 hours).",
        "- CPU steal: 4.0 % average",
        "- Free RAM (MemAvailable): 3.0 GB average",
        "- Peak swap used: 300 MB",
        "- Disk use (peak): / 60.0 %, /data 20.0 %",
        "- Unhealthy containers: at most 1 at once",
        "- Cleanup freed: 1.5 GB in 2 run(s) (standard 1, weekly 1)",
        "- Watchdog restarts: 3 (api 2, worker 1)",
        "- Backup-repair failures: 2 of 3 run(s)",
        "- Next full cleanup (monthly): 2026-12-01T04:30:00Z",
        "Top action: fix the git backup: 2 backup-repair run(s) failed (see `vm-agentctl runs "
        "backup-repair`).",
    ]


async def test_a_week_without_samples_says_so_never_zero(tmp_path: Path) -> None:
    d = await build_digest(Store(tmp_path), Config(), end=END)
    text = digest_text(d, T)
    for label in ("CPU steal", "Free RAM (MemAvailable)", "Peak swap used", "Disk use (peak)"):
        assert f"- {label}: {NO_AGENT_DATA}" in text
    assert "- Unhealthy containers: no data: the agent has no Docker samples" in text
    assert "0.0 %" not in text and "0 MB average" not in text
    assert "- Cleanup freed: 0 MB in 0 run(s) (no cleanup ran)" in text
    assert text.endswith("Top action: get host figures back: the agent's own samples had "
                         f"none for the week ({NO_AGENT_DATA}).")


async def test_unreachable_prometheus_falls_back_and_says_why(store: Store) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = replace(Config(), prometheus=PrometheusConfig(url=f"http://127.0.0.1:{port}",
                                                        timeout_s=2))
    text = digest_text(await build_digest(store, cfg, end=END), T)
    assert (f"Prometheus at http://127.0.0.1:{port} not used: unreachable "
            "(ClientConnectorError") in text
    assert "check prometheus.url" in text
    assert "- CPU steal: 4.0 % average" in text


async def test_top_action_follows_the_documented_order(store: Store) -> None:
    d = await build_digest(store, Config(), end=END)
    no_backup = replace(d, store=replace(d.store, backup_failures=0))
    assert top_action(no_backup, T).startswith("look into api: the watchdog restarted it 2")
    full = replace(no_backup, host=replace(d.host, disk_peak_percent={"/": 95.0, "/d": 91.0}))
    assert top_action(full, T).startswith("free disk on / (peak 95.0 %)")
    short = replace(no_backup, host=replace(d.host, mem_avail_avg_bytes=900e6))
    assert top_action(short, T).startswith("memory is short")
    quiet = replace(no_backup, store=replace(no_backup.store, restarts={}))
    assert top_action(quiet, T) == "nothing needs doing this week."
    steal = replace(quiet, host=replace(d.host, steal_avg_percent=5.5))
    assert top_action(steal, T).startswith("CPU steal is high")
    warn_disk = replace(quiet, host=replace(d.host, disk_peak_percent={"/": 85.0}))
    assert top_action(warn_disk, T).startswith("disk / peaked at 85.0 %")
    swap = replace(quiet, host=replace(d.host, swap_peak_bytes=2e9))
    assert top_action(swap, T).startswith("swap was used")


def test_one_digest_per_reported_iso_week(tmp_path: Path) -> None:
    assert iso_week(END) == "2026-W49"
    assert iso_week(END - 9 * 3600) == "2026-W48"  # Sunday 23:00 is still last week
    assert iso_week(at("2027-01-03T12:00:00Z")) == "2026-W53"  # ISO year != calendar year
    # the Monday 08:00 run reports on the week that just ended (W48: Nov 23-29)
    assert report_week(END) == "2026-W48" and dedupe_key(END) == "digest:2026-W48"
    # a manual Sunday run and the Monday timer report on the same week: one digest
    sunday = at("2026-11-29T20:00:00Z")
    assert dedupe_key(sunday) == dedupe_key(END) == dedupe_key(END + 3 * DAY)
    assert report_week(at("2027-01-04T08:00:00Z")) == "2026-W53"  # across the ISO year
    outbox = Outbox(Store(tmp_path))
    assert outbox.enqueue("a", kind="digest", dedupe_key=dedupe_key(sunday)) is not None
    assert outbox.enqueue("b", kind="digest", dedupe_key=dedupe_key(END)) is None
    assert outbox.enqueue("c", kind="digest", dedupe_key=dedupe_key(END + 7 * DAY)) is not None


async def test_watchdog_restarts_are_no_data_when_docker_was_never_watched(
        tmp_path: Path) -> None:
    s = Store(tmp_path / "state")
    HostHistory(s).record(host("2026-11-24T10:00:05Z", steal=2.0, avail=4 * 10**9, swap=0,
                               disks={"/": 50.0}, unhealthy=None))  # Docker unreachable
    text = digest_text(await build_digest(s, Config(), end=END), T).splitlines()
    assert f"- Watchdog restarts: {NO_DOCKER_WATCH}" in text
    HostHistory(s).record(host("2026-11-25T10:00:05Z", steal=2.0, avail=4 * 10**9, swap=0,
                               disks={"/": 50.0}, unhealthy=0))  # Docker watched, all healthy
    text = digest_text(await build_digest(s, Config(), end=END), T).splitlines()
    assert "- Watchdog restarts: 0" in text


def test_prometheus_queries_use_node_exporter_series() -> None:
    q = promql(7, ("/", "/data"), 'instance="vm1:9100"')
    assert q["steal"] == ('100 * avg(avg_over_time(rate(node_cpu_seconds_total{mode="steal",'
                          'instance="vm1:9100"}[5m])[7d:5m]))')
    assert q["mem"] == ('avg(avg_over_time(node_memory_MemAvailable_bytes'
                        '{instance="vm1:9100"}[7d]))')
    assert q["swap"] == ('max(max_over_time(node_memory_SwapTotal_bytes{instance="vm1:9100"}'
                         '[7d]) - min_over_time(node_memory_SwapFree_bytes'
                         '{instance="vm1:9100"}[7d]))')
    fs = '{mountpoint=~"/|/data",instance="vm1:9100"}'
    used = f"(node_filesystem_size_bytes{fs} - node_filesystem_free_bytes{fs})"
    assert q["disk"] == (f"max by (mountpoint) (max_over_time((100 * {used} / ({used} + "
                         f"node_filesystem_avail_bytes{fs}))[7d:5m]))")
    assert promql(7, ("/",))["mem"] == "avg(avg_over_time(node_memory_MemAvailable_bytes[7d]))"


def test_host_hourly_folds_samples_per_utc_hour_and_prunes(tmp_path: Path) -> None:
    s = Store(tmp_path)
    hist = HostHistory(s)
    hist.record(host("2026-11-24T10:00:00Z", steal=1.0, avail=5 * 10**9, swap=10,
                     disks={"/": 40.0}, unhealthy=None))
    hist.record(host("2026-11-24T10:59:59Z", steal=3.0, avail=3 * 10**9, swap=30,
                     disks={"/": 45.0}, unhealthy=2))
    hist.record(host("2026-11-24T11:00:00Z", steal=8.0, avail=1 * 10**9, swap=20,
                     disks={"/": 41.0}, unhealthy=None))
    rows = [dict(r) for r in s.query("SELECT * FROM host_hourly ORDER BY hour")]
    assert rows == [
        {"hour": at("2026-11-24T10:00:00Z"), "samples": 2, "steal_sum": 4.0,
         "mem_avail_min": 3 * 10**9, "mem_avail_sum": 8e9, "swap_used_max": 30,
         "unhealthy_max": 2},
        {"hour": at("2026-11-24T11:00:00Z"), "samples": 1, "steal_sum": 8.0,
         "mem_avail_min": 1 * 10**9, "mem_avail_sum": 1e9, "swap_used_max": 20,
         "unhealthy_max": None},
    ]
    assert [r["used_percent_max"] for r in s.query(
        "SELECT used_percent_max FROM host_hourly_disk ORDER BY hour")] == [45.0, 41.0]
    hist.record(host("2027-01-24T11:00:00Z", steal=0.0, avail=1, swap=0, disks={},
                     unhealthy=0))  # 61 days on: the old hours are pruned
    assert [r["hour"] for r in s.query("SELECT hour FROM host_hourly")] == [
        at("2027-01-24T11:00:00Z")]
    assert s.query("SELECT COUNT(*) AS n FROM host_hourly_disk")[0]["n"] == 0
