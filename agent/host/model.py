"""Typed host samples: what ``GET /v1/health`` returns (PROTOCOL.md "Host sample").

Units: bytes are ints, percentages floats 0-100, times RFC 3339 UTC strings.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from agent.errors import Internal

Level = Literal["OK", "WARN", "CRIT"]
LEVEL_ORDER: dict[str, int] = {"OK": 0, "WARN": 1, "CRIT": 2}


@dataclass(frozen=True)
class CpuSample:
    """CPU share from two /proc/stat reads ``window_s`` seconds apart."""

    cores: int
    steal_percent: float
    iowait_percent: float
    window_s: float


@dataclass(frozen=True)
class LoadSample:
    load1: float
    load5: float
    load15: float
    load1_per_core: float


@dataclass(frozen=True)
class MemorySample:
    total_bytes: int
    available_bytes: int
    swap_total_bytes: int
    swap_used_bytes: int
    swap_cached_bytes: int


@dataclass(frozen=True)
class DiskSample:
    mount: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    used_percent: float


@dataclass(frozen=True)
class DockerSummary:
    """Container counts; ``available`` is False (and ``error`` set) when Docker is down."""

    available: bool
    containers_total: int = 0
    running: int = 0
    unhealthy: int = 0
    unhealthy_names: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class HostSample:
    sampled_at: str
    status: Level
    levels: dict[str, Level]
    cpu: CpuSample
    load: LoadSample
    memory: MemorySample
    disks: tuple[DiskSample, ...]
    docker: DockerSummary

    def to_wire(self) -> dict[str, Any]:
        """The PROTOCOL.md shape (tuples become lists)."""
        wire = asdict(self)
        wire["disks"] = [asdict(d) for d in self.disks]
        wire["docker"]["unhealthy_names"] = list(self.docker.unhealthy_names)
        return wire

    @functools.cached_property
    def wire_json(self) -> str:
        """:meth:`to_wire` as compact JSON, encoded once per sample (health is read often).

        Raises ValueError on a NaN or infinite float (not JSON; the parsers refuse them).
        """
        return json.dumps(self.to_wire(), separators=(",", ":"), allow_nan=False)


def worst(levels: dict[str, Level]) -> Level:
    """The worst level of ``levels`` (OK when empty)."""
    return max(levels.values(), key=LEVEL_ORDER.__getitem__, default="OK")


class HostReadError(Internal):
    """A /proc file that exists but cannot be parsed (``details``: ``{"source": path}``)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}", {"source": source})
