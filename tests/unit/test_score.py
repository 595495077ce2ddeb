"""The score card: every band boundary of every dimension (just below, at, just above)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agent.host.model import (
    CpuSample,
    DiskSample,
    DockerSummary,
    HostSample,
    LoadSample,
    MemorySample,
)
from agent.jobs.records import RunRecords, rfc3339
from agent.score import last_successful_cleanup, render_table, score_card
from agent.store import Store

NOW = 1_790_000_000.0
DAY = 86400.0


def disk(mount: str, percent: float) -> DiskSample:
    total = 100_000_000_000
    used = int(total * percent / 100)
    return DiskSample(mount, total, used, total - used, percent)


def sample(*, steal: float = 0.0, available: int = 10_000_000_000,
           disks: tuple[DiskSample, ...] = (disk("/", 10.0),),
           docker: DockerSummary | None = None) -> HostSample:
    return HostSample(
        sampled_at="2026-11-29T12:00:00Z", status="OK", levels={},
        cpu=CpuSample(cores=4, steal_percent=steal, iowait_percent=0.0, window_s=1.0),
        load=LoadSample(0.1, 0.1, 0.1, 0.025),
        memory=MemorySample(16_000_000_000, available, 0, 0, 0), disks=disks,
        docker=docker or DockerSummary(available=True, containers_total=40, running=40))


def cleanup(*, age_s: float = DAY, freed: int = 1, status: str = "ok",
            dry_run: bool = False) -> dict[str, Any]:
    return {"job": "cleanup", "status": status, "dry_run": dry_run, "freed_bytes": freed,
            "started_at": rfc3339(NOW - age_s - 60), "finished_at": rfc3339(NOW - age_s)}


def dim(card: Any, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in card.to_wire()["dimensions"] if d["name"] == name)
    return found


@pytest.mark.parametrize(("steal", "points"), [
    (0.0, 20), (1.99, 20), (2.0, 15), (2.01, 15), (4.99, 15), (5.0, 10), (5.01, 10),
    (9.99, 10), (10.0, 5), (10.01, 5), (100.0, 5)])
def test_cpu_efficiency_bands(steal: float, points: int) -> None:
    d = dim(score_card(sample(steal=steal), cleanup(), NOW), "cpu_efficiency")
    assert (d["points"], d["max_points"], d["value"]) == (points, 20, steal)
    assert f"{steal:g} %" in d["reason"]


@pytest.mark.parametrize(("available", "points"), [
    (6_000_000_001, 20), (6_000_000_000, 15), (5_999_999_999, 15),
    (3_000_000_001, 15), (3_000_000_000, 5), (2_999_999_999, 5),
    (1_000_000_001, 5), (1_000_000_000, 0), (999_999_999, 0), (0, 0)])
def test_memory_pressure_bands(available: int, points: int) -> None:
    d = dim(score_card(sample(available=available), cleanup(), NOW), "memory_pressure")
    assert (d["points"], d["max_points"], d["value"]) == (points, 20, available)


@pytest.mark.parametrize(("used", "points"), [
    (0.0, 15), (39.99, 15), (40.0, 10), (40.01, 10), (54.99, 10), (55.0, 5), (55.01, 5),
    (69.99, 5), (70.0, 0), (70.01, 0), (100.0, 0)])
def test_disk_health_bands(used: float, points: int) -> None:
    d = dim(score_card(sample(disks=(disk("/", used),)), cleanup(), NOW), "disk_health")
    assert (d["points"], d["max_points"], d["value"]) == (points, 15, used)


def test_disk_health_uses_the_worst_mount() -> None:
    s = sample(disks=(disk("/", 10.0), disk("/srv", 56.0), disk("/var", 41.0)))
    d = dim(score_card(s, cleanup(), NOW), "disk_health")
    assert (d["points"], d["value"]) == (5, 56.0)
    assert "/srv" in d["reason"]


def test_no_sampled_disk_scores_zero_and_says_so() -> None:
    d = dim(score_card(sample(disks=()), cleanup(), NOW), "disk_health")
    assert (d["points"], d["value"]) == (0, None)
    assert "no configured mount" in d["reason"]


@pytest.mark.parametrize(("unhealthy", "points"), [
    (0, 20), (1, 15), (2, 15), (3, 8), (5, 8), (6, 2), (40, 2)])
def test_service_health_bands(unhealthy: int, points: int) -> None:
    names = tuple(f"c{i}" for i in range(unhealthy))
    dk = DockerSummary(available=True, containers_total=40, running=40, unhealthy=unhealthy,
                       unhealthy_names=names)
    d = dim(score_card(sample(docker=dk), cleanup(), NOW), "service_health")
    assert (d["points"], d["max_points"], d["value"]) == (points, 20, unhealthy)
    assert f"{unhealthy} of 40 containers unhealthy" in d["reason"]
    assert all(n in d["reason"] for n in names)


def test_docker_down_scores_the_worst_band_and_says_why() -> None:
    dk = DockerSummary(available=False, error="connection refused")
    d = dim(score_card(sample(docker=dk), cleanup(), NOW), "service_health")
    assert (d["points"], d["value"]) == (2, None)
    assert "Docker is unreachable (connection refused)" in d["reason"]


def test_a_host_without_docker_on_purpose_is_not_scored_as_six_unhealthy() -> None:
    dk = DockerSummary(available=False, error="socket not found")
    on_purpose = dataclasses.replace(sample(docker=dk), levels={"docker_available": "OK"})
    d = dim(score_card(on_purpose, cleanup(), NOW), "service_health")
    assert (d["points"], d["value"]) == (20, 0)
    assert "thresholds.docker_unavailable: OK" in d["reason"]


@pytest.mark.parametrize(("age_s", "freed", "points"), [
    (0.0, 1, 15), (7 * DAY - 1, 1, 15), (7 * DAY, 1, 8), (7 * DAY + 1, 1, 8),
    (DAY, 0, 8), (7 * DAY - 1, 0, 8),
    (30 * DAY - 1, 1, 8), (30 * DAY, 1, 0), (30 * DAY + 1, 1, 0), (30 * DAY - 1, 0, 8)])
def test_maintenance_hygiene_bands(age_s: float, freed: int, points: int) -> None:
    d = dim(score_card(sample(), cleanup(age_s=age_s, freed=freed), NOW), "maintenance_hygiene")
    assert (d["points"], d["max_points"]) == (points, 15)
    assert d["value"] == pytest.approx(age_s / DAY, abs=1e-3)


@pytest.mark.parametrize("record", [None, cleanup(status="partial"), cleanup(status="failed"),
                                    cleanup(dry_run=True)])
def test_no_successful_cleanup_scores_zero_and_says_so(record: dict[str, Any] | None) -> None:
    d = dim(score_card(sample(), record, NOW), "maintenance_hygiene")
    assert (d["points"], d["value"]) == (0, None)
    assert "no successful cleanup" in d["reason"]


@pytest.mark.parametrize(("available", "points"), [
    (8_000_000_001, 10), (8_000_000_000, 7), (7_999_999_999, 7),
    (4_000_000_001, 7), (4_000_000_000, 4), (3_999_999_999, 4),
    (2_000_000_001, 4), (2_000_000_000, 1), (1_999_999_999, 1), (0, 1)])
def test_llm_readiness_bands(available: int, points: int) -> None:
    d = dim(score_card(sample(available=available), cleanup(), NOW), "llm_readiness")
    assert (d["points"], d["max_points"], d["value"]) == (points, 10, available)


def test_the_total_is_the_sum_and_a_perfect_host_scores_100() -> None:
    card = score_card(sample(), cleanup(), NOW).to_wire()
    assert card["score"] == 100
    assert [d["name"] for d in card["dimensions"]] == [
        "cpu_efficiency", "memory_pressure", "disk_health", "service_health",
        "maintenance_hygiene", "llm_readiness"]
    assert sum(d["max_points"] for d in card["dimensions"]) == 100
    worse = score_card(sample(steal=3.0, available=2_500_000_000), None, NOW).to_wire()
    points = sum(d["points"] for d in worse["dimensions"])
    assert worse["score"] == points == 15 + 5 + 15 + 20 + 0 + 4
    assert all(set(d) == {"name", "points", "max_points", "value", "reason"} and d["reason"]
               for d in worse["dimensions"])
    assert "score 59/100" in render_table(worse)


def test_last_successful_cleanup_skips_dry_runs_failures_and_other_jobs(tmp_path: Any) -> None:
    records = RunRecords(Store(str(tmp_path)))
    assert last_successful_cleanup(records) is None
    good = records.start(job="cleanup", mode="standard", dry_run=False, trigger="timer",
                         peer=None, pid=1, now=NOW - 3 * DAY)
    records.finish(good, status="ok", reason=None, disk_after=None, now=NOW - 3 * DAY + 5)
    for job, status, dry in (("cleanup", "ok", True), ("cleanup", "failed", False),
                             ("watchdog", "ok", False)):
        rid = records.start(job=job, mode="standard", dry_run=dry, trigger="api", peer=None,
                            pid=1, now=NOW - DAY)
        records.finish(rid, status=status, reason=None, disk_after=None, now=NOW - DAY)
    running = records.start(job="cleanup", mode="standard", dry_run=False, trigger="api",
                            peer=None, pid=1, now=NOW)
    found = last_successful_cleanup(records)
    assert found is not None and found["id"] == good != running
    d = dim(score_card(sample(), found, NOW), "maintenance_hygiene")
    assert d["points"] == 8  # 3 days ago but freed nothing (no steps)
