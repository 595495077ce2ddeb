"""The VM score card (``GET /v1/score``): the roadmap's 0-100 algorithm, as a pure function.

Six dimensions, points per band (issue 6, "VM score card"); GB = 10^9 bytes:

=====================  ===  ======================================================
cpu_efficiency          20  steal < 2 % = 20, < 5 % = 15, < 10 % = 10, else 5
memory_pressure         20  MemAvailable > 6 GB = 20, > 3 GB = 15, > 1 GB = 5, else 0
disk_health             15  worst sampled mount used < 40 % = 15, < 55 % = 10,
                            < 70 % = 5, else 0
service_health          20  unhealthy containers 0 = 20, 1-2 = 15, 3-5 = 8, 6+ = 2
maintenance_hygiene     15  last successful cleanup (status ok, not a dry run)
                            < 7 days ago and freed > 0 B = 15, < 30 days ago = 8, else 0
llm_readiness           10  MemAvailable > 8 GB = 10, > 4 GB = 7, > 2 GB = 4, else 1
=====================  ===  ======================================================

Missing inputs, stated in the reason: Docker unreachable scores service
health in its worst band (2 points, as for 6+ unhealthy: the health of the
containers cannot be confirmed, and the algorithm gives no band below 2);
no successful cleanup ever gives 0 (the "else" band); no sampled disk (every
configured mount missing or hung) gives 0 (unknown disk health is not healthy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.host.model import HostSample
from agent.jobs.records import RunRecords

GB = 1e9
DAY_S = 86400.0


@dataclass(frozen=True)
class Dimension:
    """One row of the card: ``value`` in the unit the reason names (None when unknown)."""

    name: str
    points: int
    max_points: int
    value: float | int | None
    reason: str

    def to_wire(self) -> dict[str, Any]:
        """``{name, points, max_points, value, reason}``."""
        return {"name": self.name, "points": self.points, "max_points": self.max_points,
                "value": self.value, "reason": self.reason}


@dataclass(frozen=True)
class ScoreCard:
    """``score`` 0-100 (the sum of the dimensions' points) and the dimensions."""

    score: int
    dimensions: tuple[Dimension, ...]

    def to_wire(self) -> dict[str, Any]:
        """PROTOCOL.md ``GET /v1/score``: ``{score, dimensions: [...]}``."""
        return {"score": self.score, "dimensions": [d.to_wire() for d in self.dimensions]}


# (limit, points) bands, checked in order; the last entry's limit is None (the "else" band).
Bands = Sequence[tuple[float | None, int]]
STEAL_BANDS: Bands = ((2.0, 20), (5.0, 15), (10.0, 10), (None, 5))
MEMORY_BANDS: Bands = ((6 * GB, 20), (3 * GB, 15), (1 * GB, 5), (None, 0))
DISK_BANDS: Bands = ((40.0, 15), (55.0, 10), (70.0, 5), (None, 0))
LLM_BANDS: Bands = ((8 * GB, 10), (4 * GB, 7), (2 * GB, 4), (None, 1))


def band_below(value: float, bands: Bands) -> tuple[int, str]:
    """Points of the first band whose limit ``value`` is strictly under, and a phrase."""
    for i, (limit, points) in enumerate(bands):
        if limit is None:
            return points, f"at least {_num(bands[i - 1][0])}"
        if value < limit:
            return points, f"under {_num(limit)}"
    raise AssertionError("bands end with an else band")


def band_above(value: float, bands: Bands) -> tuple[int, str]:
    """Points of the first band whose limit ``value`` is strictly over, and a phrase."""
    for i, (limit, points) in enumerate(bands):
        if limit is None:
            return points, f"at most {_num(bands[i - 1][0])}"
        if value > limit:
            return points, f"more than {_num(limit)}"
    raise AssertionError("bands end with an else band")


def _num(limit: float | None) -> str:
    assert limit is not None
    return f"{limit / GB:g} GB" if limit >= GB else f"{limit:g} %"


def _gb(n: float) -> str:
    return f"{n / GB:.2f} GB"


def cpu_efficiency(steal_percent: float) -> Dimension:
    """Steal % of the last CPU window (``man 5 proc``, /proc/stat ``steal``)."""
    points, phrase = band_below(steal_percent, STEAL_BANDS)
    return Dimension("cpu_efficiency", points, 20, steal_percent,
                     f"CPU steal is {steal_percent:g} % ({phrase}) of the last sampling window")


def memory_pressure(available_bytes: int) -> Dimension:
    """MemAvailable in bytes (``man 5 proc``, /proc/meminfo)."""
    points, phrase = band_above(available_bytes, MEMORY_BANDS)
    return Dimension("memory_pressure", points, 20, available_bytes,
                     f"{_gb(available_bytes)} of memory available ({phrase})")


def disk_health(sample: HostSample) -> Dimension:
    """The worst (most used) sampled mount of ``sampling.disks``."""
    if not sample.disks:
        return Dimension("disk_health", 0, 15, None,
                         "no configured mount could be sampled (missing or hung): disk "
                         "health unknown, scored 0")
    worst = max(sample.disks, key=lambda d: d.used_percent)
    points, phrase = band_below(worst.used_percent, DISK_BANDS)
    return Dimension("disk_health", points, 15, worst.used_percent,
                     f"fullest mount {worst.mount} is {worst.used_percent:g} % used ({phrase})")


def service_health(sample: HostSample) -> Dimension:
    """Unhealthy containers (Docker health status); Docker down scores the worst band (2),
    unless the host runs without Docker on purpose (``thresholds.docker_unavailable: OK``
    makes its level OK): then nothing can be unhealthy (20)."""
    dk = sample.docker
    if not dk.available and sample.levels.get("docker_available") == "OK":
        return Dimension("service_health", 20, 20, 0, "no Docker on this host "
                         "(thresholds.docker_unavailable: OK): no container to be unhealthy")
    if not dk.available:
        return Dimension("service_health", 2, 20, None,
                         f"Docker is unreachable ({dk.error or 'no reply'}): container health "
                         "unknown, scored as the worst band (6+ unhealthy)")
    n = dk.unhealthy
    points = 20 if n == 0 else 15 if n <= 2 else 8 if n <= 5 else 2
    band = "none" if n == 0 else "1-2" if n <= 2 else "3-5" if n <= 5 else "6 or more"
    names = f": {', '.join(dk.unhealthy_names)}" if dk.unhealthy_names else ""
    return Dimension("service_health", points, 20, n,
                     f"{n} of {dk.containers_total} containers unhealthy ({band}){names}")


def maintenance_hygiene(cleanup: dict[str, Any] | None, now: float) -> Dimension:
    """From the last successful cleanup run record (PROTOCOL.md "Run record").

    ``cleanup`` must be a finished cleanup record with status ``ok`` and
    ``dry_run`` false; any other record (or None) counts as no successful
    cleanup.  ``now`` is Unix seconds.  Age counts from ``finished_at``.
    """
    if not _successful(cleanup):
        return Dimension("maintenance_hygiene", 0, 15, None,
                         "no successful cleanup on record (status ok, not a dry run)")
    assert cleanup is not None
    age_days = (now - _unix(cleanup["finished_at"])) / DAY_S
    freed = int(cleanup.get("freed_bytes") or 0)
    points = 15 if age_days < 7 and freed > 0 else 8 if age_days < 30 else 0
    why = ("under 7 days ago and freed space" if points == 15 else
           "under 30 days ago" + (" but freed nothing" if age_days < 7 else "")
           if points == 8 else "30 days ago or more")
    return Dimension("maintenance_hygiene", points, 15, round(age_days, 3),
                     f"last successful cleanup {age_days:.1f} days ago freed "
                     f"{_gb(freed)} ({why})")


def _successful(rec: dict[str, Any] | None) -> bool:
    return (rec is not None and rec.get("status") == "ok" and not rec.get("dry_run")
            and rec.get("finished_at") is not None)


def _unix(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


def llm_readiness(available_bytes: int) -> Dimension:
    """Free RAM for a local model: MemAvailable in bytes."""
    points, phrase = band_above(available_bytes, LLM_BANDS)
    return Dimension("llm_readiness", points, 10, available_bytes,
                     f"{_gb(available_bytes)} free for a local model ({phrase})")


def score_card(sample: HostSample, cleanup: dict[str, Any] | None, now: float) -> ScoreCard:
    """The card for one host sample, the last successful cleanup record and ``now``
    (Unix seconds).  Pure: no I/O, no clock."""
    dims = (cpu_efficiency(sample.cpu.steal_percent),
            memory_pressure(sample.memory.available_bytes), disk_health(sample),
            service_health(sample), maintenance_hygiene(cleanup, now),
            llm_readiness(sample.memory.available_bytes))
    return ScoreCard(sum(d.points for d in dims), dims)


def last_successful_cleanup(records: RunRecords) -> dict[str, Any] | None:
    """The newest cleanup run record with status ``ok`` and not a dry run, or None.

    Blocking (SQLite): call through ``asyncio.to_thread`` from the event loop.
    """
    rows = records.store.query(
        "SELECT id FROM job_runs WHERE job = 'cleanup' AND status = 'ok' AND dry_run = 0"
        " AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1")
    return records.get(int(rows[0]["id"])) if rows else None


def render_table(card: dict[str, Any]) -> str:
    """``vm-agentctl score``: the total, then one line per dimension (wire shape in)."""
    from agent.clifmt import table

    rows = [[d["name"], f"{d['points']}/{d['max_points']}", d["reason"]]
            for d in card["dimensions"]]
    return f"score {card['score']}/100\n" + table(rows, ["dimension", "points", "reason"])
