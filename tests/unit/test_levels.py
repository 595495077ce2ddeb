"""OK/WARN/CRIT boundaries of every thresholded metric."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.config import Threshold, ThresholdsConfig
from agent.host.levels import higher_is_worse, levels, lower_is_worse
from agent.host.model import CpuSample, DiskSample, DockerSummary, LoadSample, MemorySample

T = ThresholdsConfig()  # the defaults: the roadmap's limits

CPU = CpuSample(cores=4, steal_percent=0.0, iowait_percent=0.0, window_s=1.0)
MEM = MemorySample(total_bytes=16 * 10**9, available_bytes=8 * 10**9, swap_total_bytes=4 * 10**9,
                   swap_used_bytes=0, swap_cached_bytes=0)
LOAD = LoadSample(load1=0.4, load5=0.3, load15=0.2, load1_per_core=0.1)
DOCKER = DockerSummary(available=True, containers_total=3, running=3)


def disk(mount: str, percent: float) -> DiskSample:
    return DiskSample(mount=mount, total_bytes=100, used_bytes=int(percent), free_bytes=0,
                      used_percent=percent)


def all_levels(**parts: object) -> dict[str, str]:
    args: dict[str, object] = {"cpu": CPU, "memory": MEM, "load": LOAD, "disks": (),
                               "docker": DOCKER, "thresholds": T, **parts}
    return dict(levels(**args))  # type: ignore[arg-type]


def test_a_quiet_host_is_all_ok_with_every_key() -> None:
    result = all_levels(disks=(disk("/", 10.0), disk("/data", 20.0)))
    assert set(result) == {
        "steal_percent", "iowait_percent", "swap_used_bytes", "swap_cached_bytes",
        "memory_available_bytes", "load1_per_core", "unhealthy_containers",
        "docker_available", "disk_used_percent:/", "disk_used_percent:/data"}
    assert set(result.values()) == {"OK"}


@pytest.mark.parametrize(("value", "level"), [
    (5.0, "OK"), (5.01, "WARN"), (15.0, "WARN"), (15.01, "CRIT")])
def test_steal_boundaries(value: float, level: str) -> None:
    assert all_levels(cpu=replace(CPU, steal_percent=value))["steal_percent"] == level


@pytest.mark.parametrize(("value", "level"), [
    (20.0, "OK"), (20.01, "WARN"), (50.0, "WARN"), (50.01, "CRIT")])
def test_iowait_boundaries(value: float, level: str) -> None:
    assert all_levels(cpu=replace(CPU, iowait_percent=value))["iowait_percent"] == level


@pytest.mark.parametrize(("value", "level"), [
    (1_500_000_000, "OK"), (1_500_000_001, "WARN"), (4_000_000_000, "WARN"),
    (4_000_000_001, "CRIT")])
def test_swap_used_boundaries(value: int, level: str) -> None:
    assert all_levels(memory=replace(MEM, swap_used_bytes=value))["swap_used_bytes"] == level


@pytest.mark.parametrize(("value", "level"), [
    (200_000_000, "OK"), (200_000_001, "WARN"), (10**12, "WARN")])  # crit is None: never CRIT
def test_swap_cached_boundaries(value: int, level: str) -> None:
    assert all_levels(memory=replace(MEM, swap_cached_bytes=value))["swap_cached_bytes"] == level


@pytest.mark.parametrize(("value", "level"), [
    (1_000_000_000, "OK"), (999_999_999, "WARN"), (500_000_000, "WARN"),
    (499_999_999, "CRIT"), (0, "CRIT")])
def test_memory_available_lower_is_worse(value: int, level: str) -> None:
    result = all_levels(memory=replace(MEM, available_bytes=value))
    assert result["memory_available_bytes"] == level


@pytest.mark.parametrize(("value", "level"), [
    (1.5, "OK"), (1.501, "WARN"), (3.0, "WARN"), (3.001, "CRIT")])
def test_load_per_core_boundaries(value: float, level: str) -> None:
    assert all_levels(load=replace(LOAD, load1_per_core=value))["load1_per_core"] == level


@pytest.mark.parametrize(("value", "level"), [(0, "OK"), (1, "WARN"), (5, "WARN"), (6, "CRIT")])
def test_unhealthy_containers_boundaries(value: int, level: str) -> None:
    assert all_levels(docker=replace(DOCKER, unhealthy=value))["unhealthy_containers"] == level


@pytest.mark.parametrize(("value", "level"), [
    (80.0, "OK"), (80.01, "WARN"), (90.0, "WARN"), (90.01, "CRIT")])
def test_disk_boundaries_per_mount(value: float, level: str) -> None:
    result = all_levels(disks=(disk("/", value), disk("/srv", 1.0)))
    assert result["disk_used_percent:/"] == level
    assert result["disk_used_percent:/srv"] == "OK"


def test_unsampled_mount_is_warn() -> None:
    result = all_levels(disks=(disk("/", 1.0),), unsampled_mounts=("/mnt/nfs",))
    assert result["disk_used_percent:/mnt/nfs"] == "WARN"


def test_docker_unavailable_is_warn() -> None:
    result = all_levels(docker=DockerSummary(available=False, error="connection refused"))
    assert result["docker_available"] == "WARN"
    assert all_levels()["docker_available"] == "OK"


def test_none_disables_a_level() -> None:
    assert higher_is_worse(10**9, Threshold(warn=None, crit=None)) == "OK"
    assert higher_is_worse(10**9, Threshold(warn=1, crit=None)) == "WARN"
    assert higher_is_worse(10**9, Threshold(warn=None, crit=1)) == "CRIT"
    assert lower_is_worse(-1, Threshold(warn=None, crit=None)) == "OK"
    assert lower_is_worse(0, Threshold(warn=None, crit=1)) == "CRIT"


def test_custom_thresholds_are_used() -> None:
    custom = replace(T, steal_percent=Threshold(warn=0.5, crit=1.0))
    result = all_levels(cpu=replace(CPU, steal_percent=0.75), thresholds=custom)
    assert result["steal_percent"] == "WARN"
