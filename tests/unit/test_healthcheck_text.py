"""The health-check message: one line per metric over its limit, with value, limit and advice."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.config import Threshold, ThresholdsConfig
from agent.host.levels import levels
from agent.host.model import (
    CpuSample,
    DiskSample,
    DockerSummary,
    HostSample,
    LoadSample,
    MemorySample,
    worst,
)
from agent.jobs.healthcheck import findings, message, size, summary

T = ThresholdsConfig()
CPU = CpuSample(cores=4, steal_percent=0.5, iowait_percent=1.0, window_s=1.0)
MEM = MemorySample(total_bytes=16 * 10**9, available_bytes=8 * 10**9, swap_total_bytes=4 * 10**9,
                   swap_used_bytes=0, swap_cached_bytes=0)
LOAD = LoadSample(load1=0.4, load5=0.3, load15=0.2, load1_per_core=0.1)
DOCKER = DockerSummary(available=True, containers_total=3, running=3)
ROOT = DiskSample("/", 100 * 10**9, 40 * 10**9, 60 * 10**9, 40.0)


def sample(t: ThresholdsConfig = T, *, unsampled: tuple[str, ...] = (),
           **parts: object) -> HostSample:
    p: dict[str, object] = {"cpu": CPU, "memory": MEM, "load": LOAD, "disks": (ROOT,),
                            "docker": DOCKER, **parts}
    lv = levels(thresholds=t, unsampled_mounts=unsampled, **p)  # type: ignore[arg-type]
    return HostSample(sampled_at="2026-11-30T07:00:00Z", status=worst(lv), levels=lv,
                      **p)  # type: ignore[arg-type]


def text_of(s: HostSample, t: ThresholdsConfig = T) -> str:
    out = message(s, findings(s, t))
    assert out is not None
    return out


def test_ok_sends_no_message_and_the_summary_says_what_was_found() -> None:
    s = sample()
    assert s.status == "OK" and findings(s, T) == []
    assert message(s, []) is None
    assert summary(s, []) == ("status OK: steal 0.5 %, MemAvailable 8.0 GB, swap 0 MB, "
                              "SwapCached 0 MB, unhealthy 0; no message")


def test_swap_cached_over_200_mb_is_an_early_memory_pressure_warning() -> None:
    s = sample(memory=replace(MEM, swap_cached_bytes=250 * 10**6))
    text = text_of(s)
    assert text.splitlines()[0] == "vm-agent health check: WARN at 2026-11-30T07:00:00Z"
    assert "1 metric over threshold" in text
    line = text.splitlines()[2]
    assert line.startswith("- [WARN] SwapCached: 250 MB (WARN above 200 MB). ")
    assert "early sign of memory pressure" in line and "docker stats" in line


def test_swap_cached_at_the_limit_is_ok() -> None:
    assert sample(memory=replace(MEM, swap_cached_bytes=200 * 10**6)).status == "OK"


@pytest.mark.parametrize(("parts", "expected", "advice"), [
    ({"cpu": replace(CPU, steal_percent=7.25)}, "- [WARN] CPU steal: 7.2 % (WARN above 5.0 %)",
     "hypervisor"),
    ({"cpu": replace(CPU, steal_percent=20.0)}, "- [CRIT] CPU steal: 20.0 % (CRIT above 15.0 %)",
     "migrate the VM"),
    ({"cpu": replace(CPU, iowait_percent=30.0)},
     "- [WARN] CPU iowait: 30.0 % (WARN above 20.0 %)", "vm-agentctl io"),
    ({"memory": replace(MEM, swap_used_bytes=2 * 10**9)},
     "- [WARN] Swap used: 2.0 GB (WARN above 1.5 GB)", "mem_limit"),
    ({"memory": replace(MEM, available_bytes=400 * 10**6)},
     "- [CRIT] MemAvailable: 400 MB (CRIT below 500 MB)", "OOM killer"),
    ({"memory": replace(MEM, available_bytes=900 * 10**6)},
     "- [WARN] MemAvailable: 900 MB (WARN below 1.0 GB)", "OOM killer"),
    ({"load": replace(LOAD, load1=8.0, load1_per_core=2.0)},
     "- [WARN] Load per core (1 min): 2.00 (WARN above 1.5)", "top"),
    ({"docker": replace(DOCKER, unhealthy=2, unhealthy_names=("api", "db"))},
     "- [WARN] Unhealthy containers: 2 (api, db) (WARN above 0)", "docker logs --tail 100"),
    ({"docker": DockerSummary(available=False, error="connection refused")},
     "- [WARN] Docker: unavailable (connection refused) (WARN)", "systemctl status docker"),
    ({"disks": (DiskSample("/", 100 * 10**9, 85 * 10**9, 15 * 10**9, 85.0),)},
     "- [WARN] Disk /: 85.0 % used, 15.0 GB free (WARN above 80.0 %)",
     "vm-agentctl run cleanup --mode weekly --dry-run"),
])
def test_each_metric_line_has_value_limit_and_advice(parts: dict[str, object], expected: str,
                                                     advice: str) -> None:
    text = text_of(sample(**parts))  # type: ignore[arg-type]
    lines = text.splitlines()
    assert len(lines) == 3, text  # header, count, the one finding
    assert lines[2].startswith(expected + ". "), lines[2]
    assert advice in lines[2]


def test_an_unmeasured_mount_is_said_not_zero() -> None:
    text = text_of(sample(unsampled=("/data",)))
    assert "- [WARN] Disk /data: not measured (WARN). The mount could not be read" in text


def test_several_metrics_worst_first_and_configured_limits_used() -> None:
    t = replace(T, steal_percent=Threshold(2, 10))
    s = sample(t, cpu=replace(CPU, steal_percent=3.0),
               memory=replace(MEM, available_bytes=300 * 10**6, swap_cached_bytes=300 * 10**6))
    text = text_of(s, t)
    lines = text.splitlines()
    assert lines[0].startswith("vm-agent health check: CRIT")
    assert lines[1] == "3 metrics over threshold:"
    assert lines[2].startswith("- [CRIT] MemAvailable: 300 MB")
    assert {lines[3].split(":")[0], lines[4].split(":")[0]} == {"- [WARN] CPU steal",
                                                                 "- [WARN] SwapCached"}
    assert "(WARN above 2.0 %)" in text
    assert summary(s, findings(s, t)).startswith("status CRIT: MemAvailable 300 MB; ")


def test_size_units_are_decimal() -> None:
    assert (size(999_999_999), size(10**9), size(1_550_000_000)) == ("1000 MB", "1.0 GB",
                                                                      "1.6 GB")


@pytest.mark.parametrize(("per_core", "says", "never"), [
    (2.0, "More runnable tasks than cores.", "under one runnable task per core"),
    (0.58, "above your configured limit of 0.5 but under one runnable task per core",
     "More runnable tasks than cores"),
])
def test_load_advice_matches_the_value(per_core: float, says: str, never: str) -> None:
    t = replace(T, load1_per_core=Threshold(0.5, 4.0))
    line = text_of(sample(t, load=replace(LOAD, load1_per_core=per_core)), t).splitlines()[2]
    assert line.startswith(f"- [WARN] Load per core (1 min): {per_core:.2f} (WARN above 0.5)")
    assert says in line and never not in line
