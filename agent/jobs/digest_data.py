"""The weekly digest's figures: Prometheus (node_exporter) when configured, else the agent's own.

Host averages come from one of two sources:

* **Prometheus** (``prometheus.url`` set): instant queries of
  ``GET <url>/api/v1/query`` (https://prometheus.io/docs/prometheus/latest/querying/api/)
  at the end of the window over node_exporter's series (:func:`promql`);
* **the agent** otherwise, or when Prometheus cannot be reached: the
  ``host_hourly`` tables (:mod:`agent.host.history`).

A figure a source does not have is ``None`` with a ``missing`` reason, never
zero.  Run records (cleanups by mode and freed bytes, backup-repair
failures) and watchdog restarts always come from the agent's store.
Units: bytes, percent 0-100, Unix seconds.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from agent.config import PrometheusConfig
from agent.containers.history import WatchdogHistory
from agent.errors import UpstreamTimeout, UpstreamUnavailable
from agent.host.history import HostHistory, HostWindow
from agent.jobs.records import RunRecords
from agent.prometheus import mount_matcher, query
from agent.prometheus import selector as _sel
from agent.store import Store

NO_AGENT_DATA = "no data: the agent has no samples for that week"
NO_PROM_DATA = "no data: Prometheus has no node_exporter series for that week"


@dataclass(frozen=True)
class HostFigures:
    """Host averages over the window and where they came from.

    ``steal_avg_percent`` (0-100), ``mem_avail_avg_bytes``, ``swap_peak_bytes``,
    ``disk_peak_percent`` ``{mount: percent}`` (empty = no data), ``unhealthy_max``
    (agent only); ``source`` says which source in words; ``missing`` is the text
    shown for a None figure; ``note`` e.g. why Prometheus was not used.
    """

    source: str
    missing: str
    steal_avg_percent: float | None = None
    mem_avail_avg_bytes: float | None = None
    swap_peak_bytes: float | None = None
    disk_peak_percent: dict[str, float] = field(default_factory=dict)
    unhealthy_max: int | None = None
    note: str = ""


@dataclass(frozen=True)
class StoreFigures:
    """From the agent's store over the window.

    ``cleanups`` real (not dry-run, not refused) cleanup runs by mode;
    ``cleanup_freed_bytes`` what they freed; ``backup_runs``/``backup_failures``
    backup-repair runs and those ending ``failed`` or ``partial``;
    ``restarts`` watchdog restarts per container name.
    """

    cleanups: dict[str, int]
    cleanup_freed_bytes: int
    backup_runs: int
    backup_failures: int
    restarts: dict[str, int]
    host: HostWindow


def store_figures(store: Store, start: float, end: float) -> StoreFigures:
    """Everything the digest reads from ``store`` for ``[start, end)`` (blocking: SQLite)."""
    RunRecords(store), WatchdogHistory(store)  # make sure their tables exist
    cleanup = store.query(
        "SELECT mode, COUNT(*) AS n, SUM(freed_bytes) AS freed FROM job_runs WHERE job ="
        " 'cleanup' AND dry_run = 0 AND status != 'skipped' AND started_at >= ? AND"
        " started_at < ? GROUP BY mode ORDER BY mode", (start, end))
    backup = store.query(
        "SELECT COUNT(*) AS n, SUM(status IN ('failed', 'partial')) AS bad FROM job_runs"
        " WHERE job = 'backup-repair' AND dry_run = 0 AND status != 'skipped' AND"
        " started_at >= ? AND started_at < ?", (start, end))[0]
    restarts = store.query(
        "SELECT container FROM container_restarts WHERE trigger = 'watchdog' AND"
        " result != 'vanished' AND at >= ? AND at < ?", (start, end))
    return StoreFigures(
        cleanups={r["mode"]: int(r["n"]) for r in cleanup},
        cleanup_freed_bytes=sum(int(r["freed"] or 0) for r in cleanup),
        backup_runs=int(backup["n"]), backup_failures=int(backup["bad"] or 0),
        restarts=dict(Counter(r["container"] for r in restarts).most_common()),
        host=HostHistory(store).window(start, end))


def agent_host(window: HostWindow, note: str = "") -> HostFigures:
    """Host figures from the agent's hourly samples."""
    source = (f"the agent's own samples ({_count(window.samples, 'sample')} in "
              f"{_count(window.hours, 'hour')})"
              if window.samples else "the agent's own samples")
    return HostFigures(source, NO_AGENT_DATA, window.steal_avg_percent,
                       window.mem_avail_avg_bytes, window.swap_used_peak_bytes,
                       dict(window.disk_peak_percent), window.unhealthy_max, note)


# --- Prometheus --------------------------------------------------------------------------


def promql(days: int, mounts: tuple[str, ...], selector: str = "") -> dict[str, str]:
    """The queries, keyed ``steal``, ``mem``, ``swap``, ``disk``, over the last ``days`` days.

    steal: mean over CPUs of ``rate(node_cpu_seconds_total{mode="steal"}[5m])`` x 100,
    averaged (``avg_over_time``, 5 min steps); mem: average MemAvailable; swap: peak of
    SwapTotal - SwapFree (``man 5 proc``) as max(SwapTotal) - min(SwapFree) over raw
    samples, so a spike between subquery steps is not missed (exact while SwapTotal does
    not change); disk: peak used % per mountpoint of ``mounts`` (5 min steps),
    used / (used + available) as ``df`` computes it (used = size - free).
    """
    r = f"{days}d"
    fs = _sel(selector, mount_matcher(mounts))
    used = f"(node_filesystem_size_bytes{fs} - node_filesystem_free_bytes{fs})"
    steal = _sel(selector, 'mode="steal"')
    return {
        "steal": f"100 * avg(avg_over_time(rate(node_cpu_seconds_total{steal}[5m])[{r}:5m]))",
        "mem": f"avg(avg_over_time(node_memory_MemAvailable_bytes{_sel(selector)}[{r}]))",
        "swap": f"max(max_over_time(node_memory_SwapTotal_bytes{_sel(selector)}[{r}]) - "
                f"min_over_time(node_memory_SwapFree_bytes{_sel(selector)}[{r}]))",
        "disk": f"max by (mountpoint) (max_over_time((100 * {used} / ({used} + "
                f"node_filesystem_avail_bytes{fs}))[{r}:5m]))",
    }


def _scalar(result: list[dict[str, Any]]) -> float | None:
    return _finite(result[0]["value"][1]) if result else None


def _finite(text: str) -> float | None:
    """A sample value of the query API (a string); None for "NaN" and "+Inf"/"-Inf"
    (e.g. 0/0 for a file system without blocks), which JSON cannot carry."""
    value = float(text)
    return value if math.isfinite(value) else None


async def prometheus_host(cfg: PrometheusConfig, mounts: tuple[str, ...], *, days: int,
                          end: float, unhealthy_max: int | None) -> HostFigures:
    """Host figures from Prometheus (``unhealthy_max`` comes from the agent: node_exporter
    has no container health).  Raises UpstreamUnavailable / UpstreamTimeout."""
    exprs = promql(days, mounts, cfg.selector)
    async with aiohttp.ClientSession() as session:
        got = {k: await query(session, cfg.url, e, end, cfg.timeout_s) for k, e in exprs.items()}
    disks = {str(r["metric"].get("mountpoint", "?")): value for r in got["disk"]
             if (value := _finite(r["value"][1])) is not None}
    return HostFigures(f"Prometheus ({cfg.url})", NO_PROM_DATA, _scalar(got["steal"]),
                       _scalar(got["mem"]), _scalar(got["swap"]), dict(sorted(disks.items())),
                       unhealthy_max)


async def host_figures(cfg: PrometheusConfig, mounts: tuple[str, ...], window: HostWindow, *,
                       days: int, end: float) -> HostFigures:
    """Prometheus when ``cfg.url`` is set and answers; else the agent's own samples (with a
    ``note`` saying why Prometheus was not used when it was configured)."""
    if not cfg.url:
        return agent_host(window)
    try:
        return await prometheus_host(cfg, mounts, days=days, end=end,
                                     unhealthy_max=window.unhealthy_max)
    except (UpstreamUnavailable, UpstreamTimeout) as exc:
        return agent_host(window, note=f"Prometheus at {cfg.url} not used: {exc.message}")


def _count(n: int, noun: str) -> str:
    """``1 hour``, ``2 hours``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
