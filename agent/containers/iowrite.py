"""Per-container disk-write rates, the pure part: rows, readings, rate, projection, level.

Rate (per container id): ``write_bytes_per_s = (bytes_now - bytes_before) /
(t_now - t_before)`` over the sampling window (``time.monotonic()``), and
``projected_bytes_per_day = write_bytes_per_s * 86400``.  A counter that
went down, or a cgroup with a new inode (the container restarted), restarts
the baseline, so a rate is never negative.

Level: CRIT when the projection is strictly above ``io.crit_bytes_per_day``,
WARN when strictly above ``io.warn_bytes_per_day``, else OK.  A container
whose level rises (OK -> WARN, OK/WARN -> CRIT) raises one AlertEvent
``io.write_rate`` (:func:`alert_for`); staying at a level or falling raises
nothing.  The sampler that reads the counters is :mod:`agent.containers.iorate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.config import IoConfig
from agent.host.model import Level
from agent.notify.events import AlertEvent

SECONDS_PER_DAY = 86400
_SEVERITY: dict[Level, int] = {"OK": 0, "WARN": 1, "CRIT": 2}


@dataclass(frozen=True)
class RunningContainer:
    """One entry of the running-containers listing (``id``: the full 64-hex id)."""

    id: str
    name: str


@dataclass(frozen=True)
class IoRate:
    """One container's write rate over the last window (bytes/s, bytes/day, seconds)."""

    name: str
    id: str
    write_bytes_per_s: float
    projected_bytes_per_day: float
    level: Level
    window_s: float
    source: str

    def to_wire(self) -> dict[str, Any]:
        """``{name, id, write_bytes_per_s, projected_bytes_per_day, level, window_s, source}``.

        ``id`` is the 12-hex short id; ``source`` the cgroup file the counter came from.
        """
        return {"name": self.name, "id": self.id[:12],
                "write_bytes_per_s": round(self.write_bytes_per_s, 1),
                "projected_bytes_per_day": round(self.projected_bytes_per_day),
                "level": self.level, "window_s": round(self.window_s, 3), "source": self.source}


@dataclass(frozen=True)
class Reading:
    """A counter reading: bytes written, the cgroup's inode, ``time.monotonic()`` seconds."""

    write_bytes: int
    incarnation: int
    at: float


def rate_between(before: Reading | None, now: Reading) -> tuple[float, float] | None:
    """``(write_bytes_per_s, window_s)`` from two readings of one cgroup.

    None (restart the baseline) when there is no earlier reading, the cgroup
    was recreated (another inode), the counter went down, or no time passed.
    """
    if before is None or before.incarnation != now.incarnation:
        return None
    window = now.at - before.at
    if now.write_bytes < before.write_bytes or window <= 0:
        return None
    return (now.write_bytes - before.write_bytes) / window, window


def projected_per_day(bytes_per_s: float) -> float:
    """Bytes per day at a constant ``bytes_per_s``: ``bytes_per_s * 86400``."""
    return bytes_per_s * SECONDS_PER_DAY


def io_level(projected_bytes_per_day: float, cfg: IoConfig) -> Level:
    """CRIT strictly above ``crit_bytes_per_day``, WARN strictly above ``warn_bytes_per_day``."""
    if projected_bytes_per_day > cfg.crit_bytes_per_day:
        return "CRIT"
    if projected_bytes_per_day > cfg.warn_bytes_per_day:
        return "WARN"
    return "OK"


def rose(before: Level | None, now: Level) -> bool:
    """True when ``now`` is worse than ``before`` (None counts as OK)."""
    return _SEVERITY[now] > _SEVERITY[before or "OK"]


def worst_first(rows: Iterable[IoRate]) -> list[IoRate]:
    """By level (CRIT first), then projected bytes/day descending, then name."""
    return sorted(rows, key=lambda r: (-_SEVERITY[r.level], -r.projected_bytes_per_day, r.name))


def alert_for(row: IoRate, cfg: IoConfig) -> AlertEvent:
    """The ``io.write_rate`` alert for a container whose level just rose."""
    limit = cfg.crit_bytes_per_day if row.level == "CRIT" else cfg.warn_bytes_per_day
    text = (f"{row.name} writes {row.write_bytes_per_s / 1e6:.1f} MB/s: projected "
            f"{row.projected_bytes_per_day / 1e9:.1f} GB/day, above the {row.level} limit of "
            f"{limit / 1e9:.1f} GB/day")
    return AlertEvent("io.write_rate", row.name, row.level, text)
