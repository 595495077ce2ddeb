"""Host samples aggregated per UTC hour (tables ``host_hourly`` + ``host_hourly_disk``).

The weekly digest's own source when Prometheus is not configured.  Each
:class:`HostSample` the background sampler takes is folded into the row of
its UTC hour with one upsert (one small transaction per sample):

* ``steal_sum`` / ``mem_avail_sum`` and ``samples``: averages are
  ``sum / samples`` (steal in percent 0-100, MemAvailable in bytes);
* ``mem_avail_min``: the lowest MemAvailable seen (bytes);
* ``swap_used_max``: peak swap used = SwapTotal - SwapFree (bytes; ``man 5 proc``);
* ``unhealthy_max``: the most unhealthy containers at once (NULL while
  Docker was unavailable for every sample of the hour);
* ``host_hourly_disk.used_percent_max``: peak used % per mount.

Rows older than :data:`KEEP_S` are pruned when a new hour starts.
Blocking (SQLite): call from the event loop through ``asyncio.to_thread``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from agent.host.model import HostSample
from agent.store import Store

KEEP_S = 60 * 86400  # hourly rows older than 60 days are pruned
HOUR_S = 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS host_hourly (
    hour INTEGER PRIMARY KEY,       -- Unix seconds of the start of the UTC hour
    samples INTEGER NOT NULL,
    steal_sum REAL NOT NULL,        -- sum of steal percent (0-100) over the samples
    mem_avail_min INTEGER NOT NULL, -- bytes
    mem_avail_sum REAL NOT NULL,    -- bytes, summed over the samples
    swap_used_max INTEGER NOT NULL, -- bytes
    unhealthy_max INTEGER           -- NULL: Docker never available this hour
);
CREATE TABLE IF NOT EXISTS host_hourly_disk (
    hour INTEGER NOT NULL REFERENCES host_hourly (hour) ON DELETE CASCADE,
    mount TEXT NOT NULL,
    used_percent_max REAL NOT NULL,
    PRIMARY KEY (hour, mount)
);
"""

_UPSERT = """
INSERT INTO host_hourly VALUES (?, 1, ?, ?, ?, ?, ?)
ON CONFLICT (hour) DO UPDATE SET
    samples = samples + 1,
    steal_sum = steal_sum + excluded.steal_sum,
    mem_avail_min = MIN(mem_avail_min, excluded.mem_avail_min),
    mem_avail_sum = mem_avail_sum + excluded.mem_avail_sum,
    swap_used_max = MAX(swap_used_max, excluded.swap_used_max),
    unhealthy_max = CASE WHEN excluded.unhealthy_max IS NULL THEN unhealthy_max
                         ELSE MAX(COALESCE(unhealthy_max, 0), excluded.unhealthy_max) END
"""
_UPSERT_DISK = """
INSERT INTO host_hourly_disk VALUES (?, ?, ?)
ON CONFLICT (hour, mount) DO UPDATE SET
    used_percent_max = MAX(used_percent_max, excluded.used_percent_max)
"""


@dataclass(frozen=True)
class HostWindow:
    """Aggregates over a time window; every figure is None when there were no samples.

    ``steal_avg_percent`` (0-100), ``mem_avail_avg_bytes`` / ``mem_avail_min_bytes``,
    ``swap_used_peak_bytes``, ``unhealthy_max`` (None when Docker was never
    available), ``disk_peak_percent`` ``{mount: percent}``; ``samples`` and ``hours``
    count what they were computed from.
    """

    samples: int = 0
    hours: int = 0
    steal_avg_percent: float | None = None
    mem_avail_avg_bytes: float | None = None
    mem_avail_min_bytes: int | None = None
    swap_used_peak_bytes: int | None = None
    unhealthy_max: int | None = None
    disk_peak_percent: dict[str, float] = field(default_factory=dict)


def hour_of(sample: HostSample) -> int:
    """Unix seconds of the start of the UTC hour of ``sample.sampled_at`` (RFC 3339)."""
    at = datetime.fromisoformat(sample.sampled_at.replace("Z", "+00:00")).timestamp()
    return int(at // HOUR_S * HOUR_S)


class HostHistory:
    """The hourly host tables in ``store`` (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.apply(SCHEMA)

    def record(self, sample: HostSample) -> None:
        """Fold one sample into its hour (one transaction); prunes old hours on a new hour."""
        hour = hour_of(sample)
        mem, docker = sample.memory, sample.docker
        with self.store.tx() as db:
            new = db.execute("SELECT 1 FROM host_hourly WHERE hour = ?", (hour,)).fetchone()
            db.execute(_UPSERT, (hour, sample.cpu.steal_percent, mem.available_bytes,
                                 mem.available_bytes, mem.swap_used_bytes,
                                 docker.unhealthy if docker.available else None))
            db.executemany(_UPSERT_DISK, [(hour, d.mount, d.used_percent)
                                          for d in sample.disks])
            if new is None:
                db.execute("DELETE FROM host_hourly WHERE hour < ?", (hour - KEEP_S,))

    def window(self, start: float, end: float) -> HostWindow:
        """Aggregates of the hours that start in ``[start, end)`` (Unix seconds)."""
        row = self.store.query(
            "SELECT COUNT(*) AS hours, SUM(samples) AS n, SUM(steal_sum) AS steal,"
            " SUM(mem_avail_sum) AS mem, MIN(mem_avail_min) AS mem_min,"
            " MAX(swap_used_max) AS swap, MAX(unhealthy_max) AS unhealthy"
            " FROM host_hourly WHERE hour >= ? AND hour < ?", (start, end))[0]
        if not row["n"]:
            return HostWindow()
        disks = self.store.query(
            "SELECT mount, MAX(used_percent_max) AS pct FROM host_hourly_disk"
            " WHERE hour >= ? AND hour < ? GROUP BY mount ORDER BY mount", (start, end))
        n = int(row["n"])
        return HostWindow(samples=n, hours=int(row["hours"]), steal_avg_percent=row["steal"] / n,
                          mem_avail_avg_bytes=row["mem"] / n, mem_avail_min_bytes=row["mem_min"],
                          swap_used_peak_bytes=row["swap"], unhealthy_max=row["unhealthy"],
                          disk_peak_percent={d["mount"]: d["pct"] for d in disks})
