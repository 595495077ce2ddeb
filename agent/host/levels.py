"""OK/WARN/CRIT per metric from :class:`agent.config.ThresholdsConfig` (pure).

Higher is worse for every metric but ``memory_available_bytes``: a value
strictly above ``crit`` is CRIT, else strictly above ``warn`` is WARN, else
OK.  For ``memory_available_bytes`` it is strictly *below*.  A ``None``
limit disables that level.  CRIT is checked first, so a misconfigured
``crit`` tighter than ``warn`` still yields CRIT.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.config import Threshold, ThresholdsConfig
from agent.host.model import (
    CpuSample,
    DiskSample,
    DockerSummary,
    Level,
    LoadSample,
    MemorySample,
)

DISK_PREFIX = "disk_used_percent:"


def higher_is_worse(value: float, threshold: Threshold) -> Level:
    """CRIT when ``value > crit``, WARN when ``value > warn``, else OK."""
    if threshold.crit is not None and value > threshold.crit:
        return "CRIT"
    if threshold.warn is not None and value > threshold.warn:
        return "WARN"
    return "OK"


def lower_is_worse(value: float, threshold: Threshold) -> Level:
    """CRIT when ``value < crit``, WARN when ``value < warn``, else OK."""
    if threshold.crit is not None and value < threshold.crit:
        return "CRIT"
    if threshold.warn is not None and value < threshold.warn:
        return "WARN"
    return "OK"


def disk_levels(disks: Iterable[DiskSample], threshold: Threshold,
                unsampled_mounts: Iterable[str] = ()) -> dict[str, Level]:
    """``{"disk_used_percent:<mount>": level}``; a configured mount that could not
    be measured (missing, statvfs error or timeout) is WARN rather than absent."""
    result: dict[str, Level] = {f"{DISK_PREFIX}{m}": "WARN" for m in unsampled_mounts}
    for disk in disks:
        result[f"{DISK_PREFIX}{disk.mount}"] = higher_is_worse(disk.used_percent, threshold)
    return result


def _level(name: str) -> Level:
    return "CRIT" if name == "CRIT" else "WARN" if name == "WARN" else "OK"


def docker_levels(docker: DockerSummary, thresholds: ThresholdsConfig) -> dict[str, Level]:
    """``docker_available`` (``thresholds.docker_unavailable`` when Docker is unavailable,
    WARN by default) and ``unhealthy_containers``."""
    return {
        "docker_available": "OK" if docker.available else _level(thresholds.docker_unavailable),
        "unhealthy_containers": higher_is_worse(docker.unhealthy,
                                                thresholds.unhealthy_containers),
    }


def levels(*, cpu: CpuSample, memory: MemorySample, load: LoadSample,
           disks: Iterable[DiskSample], docker: DockerSummary, thresholds: ThresholdsConfig,
           unsampled_mounts: Iterable[str] = ()) -> dict[str, Level]:
    """Every thresholded metric's level, keyed by the metric name of PROTOCOL.md.

    Keys: steal_percent, iowait_percent, swap_used_bytes, swap_cached_bytes,
    memory_available_bytes, load1_per_core, unhealthy_containers,
    docker_available and one ``disk_used_percent:<mount>`` per disk.
    """
    t = thresholds
    return {
        "steal_percent": higher_is_worse(cpu.steal_percent, t.steal_percent),
        "iowait_percent": higher_is_worse(cpu.iowait_percent, t.iowait_percent),
        "swap_used_bytes": higher_is_worse(memory.swap_used_bytes, t.swap_used_bytes),
        "swap_cached_bytes": higher_is_worse(memory.swap_cached_bytes, t.swap_cached_bytes),
        "memory_available_bytes": lower_is_worse(memory.available_bytes,
                                                 t.memory_available_bytes),
        "load1_per_core": higher_is_worse(load.load1_per_core, t.load1_per_core),
        **docker_levels(docker, t),
        **disk_levels(disks, t.disk_used_percent, unsampled_mounts),
    }
