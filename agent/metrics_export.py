"""The agent's own metrics, written for node_exporter's textfile collector.

Every ``metrics.interval_s`` the agent writes ``metrics.textfile`` (empty:
off) in prometheus-client's text format (``generate_latest``): written to a
temporary file in the same folder (``.<name>.XXXX.staging``, made by
``mkstemp``: not ``*.prom``, so the collector ignores it; never a planted
symlink), made 0644 through its descriptor (the service runs with
``UMask=0027`` and node_exporter as another user), then renamed over
``<textfile>``: a scrape never sees a partial file.

Series (all gauges unless ``_total``):

* ``vmagent_cpu_steal_percent``: steal, percent 0-100, over the sampler's
  last CPU window (/proc/stat, ``man 5 proc``); a percent, not a ratio, so
  it reads like ``GET /v1/health``'s ``steal_percent``.
* ``vmagent_docker_up``: 1 when the last sample reached Docker, else 0.
* ``vmagent_containers_unhealthy``: containers whose health is unhealthy
  (absent while Docker is down).
* ``vmagent_score``: the VM score card's total, 0-100 (agent/score.py).
* ``vmagent_job_last_run_timestamp_seconds{job,mode}``: Unix time the last
  finished run of that job in that mode ended.
* ``vmagent_job_last_status{job,status}``: 1 for the status of the job's
  last finished run, 0 for the other statuses (ok, partial, failed, skipped).
* ``vmagent_job_last_duration_seconds{job}``: that run's duration.
* ``vmagent_cleanup_last_freed_bytes``: bytes the last finished cleanup that
  was not a dry run, nor refused, freed.
* ``vmagent_cleanup_freed_bytes_total``, ``vmagent_watchdog_restarts_total``:
  counters kept in the state store (table ``metric_totals``), advanced past
  the run records / restart records they have counted, so they never go
  down when old records are pruned.
* ``vmagent_alerts_sent_total``, ``vmagent_alerts_failed_total``: Telegram
  sends and failed attempts since the agent started (reset on restart).
* ``vmagent_container_projected_write_bytes_per_day{container}``: the io
  sampler's projection (``GET /v1/io``).

prometheus_client is imported on the first write only (~1.5 MB RSS).

Dry runs are left out of the three ``vmagent_job_last_*`` series: a manual
dry run must not flip a "last run ok" alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError
from agent.metrics_store import JobLast, advance_totals, job_lasts
from agent.score import last_successful_cleanup, score_card

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from agent.api.services import Services

log = logging.getLogger(__name__)

FILE_MODE = 0o644  # node_exporter runs as another user (prometheus)
JOB_STATUSES = ("ok", "partial", "failed", "skipped")


@dataclass(frozen=True)
class Snapshot:
    """Everything one textfile holds; None (or empty) means "not known": left out."""

    steal_percent: float | None = None
    docker_up: bool | None = None
    unhealthy: int | None = None
    score: int | None = None
    last_run_at: dict[tuple[str, str], float] = field(default_factory=dict)
    jobs: tuple[JobLast, ...] = ()
    cleanup_last_freed_bytes: int | None = None
    cleanup_freed_bytes_total: int | None = None
    watchdog_restarts_total: int | None = None
    alerts: dict[str, int] | None = None
    projected: dict[str, float] = field(default_factory=dict)


def families(snap: Snapshot) -> list[Metric]:
    """The metric families of ``snap`` (prometheus_client objects)."""
    from prometheus_client.core import GaugeMetricFamily

    out: list[Metric] = []
    for name, doc, value in (
            ("vmagent_cpu_steal_percent", "CPU steal, percent 0-100 of the sampler's last "
             "window (/proc/stat)", snap.steal_percent),
            ("vmagent_docker_up", "1 when the last host sample reached Docker",
             None if snap.docker_up is None else int(snap.docker_up)),
            ("vmagent_containers_unhealthy", "containers whose health is unhealthy",
             snap.unhealthy),
            ("vmagent_score", "VM score card total, 0-100", snap.score),
            ("vmagent_cleanup_last_freed_bytes", "bytes freed by the last cleanup that was "
             "not a dry run", snap.cleanup_last_freed_bytes)):
        if value is not None:
            out.append(GaugeMetricFamily(name, doc, value=value))
    return out + _job_families(snap) + _counter_families(snap) + _io_families(snap)


def _job_families(snap: Snapshot) -> list[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    at = GaugeMetricFamily("vmagent_job_last_run_timestamp_seconds", "Unix time the last "
                           "finished run of a job in a mode ended", labels=["job", "mode"])
    for (job, mode), when in sorted(snap.last_run_at.items()):
        at.add_metric([job, mode], when)
    status = GaugeMetricFamily("vmagent_job_last_status", "1 for the status of a job's last "
                               "finished run, 0 for the others", labels=["job", "status"])
    took = GaugeMetricFamily("vmagent_job_last_duration_seconds", "duration of a job's last "
                             "finished run", labels=["job"])
    for last in snap.jobs:
        for s in JOB_STATUSES:
            status.add_metric([last.job, s], int(s == last.status))
        took.add_metric([last.job], last.duration_s)
    return [at, status, took] if snap.jobs or snap.last_run_at else []


def _counter_families(snap: Snapshot) -> list[Metric]:
    from prometheus_client.core import CounterMetricFamily

    alerts = snap.alerts or {}
    out: list[Metric] = []
    for name, doc, value in (
            ("vmagent_cleanup_freed_bytes", "bytes freed by cleanup runs (not dry runs)",
             snap.cleanup_freed_bytes_total),
            ("vmagent_watchdog_restarts", "container restarts made by the watchdog",
             snap.watchdog_restarts_total),
            ("vmagent_alerts_sent", "notifications sent since the agent started",
             alerts.get("sent")),
            ("vmagent_alerts_failed", "failed notification sends since the agent started",
             alerts.get("failed"))):
        if value is not None:
            out.append(CounterMetricFamily(name, doc, value=value))
    return out


def _io_families(snap: Snapshot) -> list[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    if not snap.projected:
        return []
    g = GaugeMetricFamily("vmagent_container_projected_write_bytes_per_day", "a container's "
                          "block writes over the last window, projected to a day",
                          labels=["container"])
    for name, per_day in sorted(snap.projected.items()):
        g.add_metric([name], per_day)
    return [g]


def render(snap: Snapshot) -> bytes:
    """``snap`` in the Prometheus text format (what the textfile holds)."""
    from prometheus_client import generate_latest

    return generate_latest(_registry(snap))


def _registry(snap: Snapshot) -> Any:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

    fams = families(snap)

    class SnapshotCollector(Collector):
        def collect(self) -> Iterable[Metric]:
            return fams

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector())
    return registry


def write_textfile(path: str, snap: Snapshot) -> None:
    """Write ``snap`` to ``path`` atomically, mode 0644.  Raises OSError (missing folder,
    read-only file system, disk full: the old file stays, no temporary is left).  Blocking.

    The temporary file is made with ``mkstemp`` (``O_EXCL``, a random name, so a symlink
    planted in the folder is never followed) and chmod-ed through its descriptor.
    """
    body = render(snap)
    folder, name = os.path.split(os.path.abspath(path))
    fd, staging = tempfile.mkstemp(prefix=f".{name}.", suffix=".staging", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(body)
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise


async def gather(services: Services, *, io_wait_s: float = 5.0) -> Snapshot:
    """A snapshot of the running agent: the sampler's cached sample (left out when it has
    none), the run and restart records, the notifier's stats, the io sampler's rates."""
    host = await _host_part(services)
    store_part = await asyncio.to_thread(_store_part, services)
    notifier = services.notifier  # stats() counts the outbox: SQLite, off the loop
    alerts = await asyncio.to_thread(notifier.stats) if notifier is not None else None
    return Snapshot(**host, **store_part, alerts=alerts,
                    projected=await _projected(services, io_wait_s))


async def _host_part(services: Services) -> dict[str, Any]:
    try:
        sample = await services.sampler.latest()
    except AgentError:
        return {}
    cleanup = None
    if services.jobs is not None:
        cleanup = await asyncio.to_thread(last_successful_cleanup, services.jobs.records)
    return {"steal_percent": sample.cpu.steal_percent, "docker_up": sample.docker.available,
            "unhealthy": sample.docker.unhealthy if sample.docker.available else None,
            "score": score_card(sample, cleanup, time.time()).score}


def _store_part(services: Services) -> dict[str, Any]:
    if services.store is None:
        return {}
    totals = advance_totals(services.store)
    at, lasts, freed = job_lasts(services.store)
    return {"last_run_at": at, "jobs": lasts, "cleanup_last_freed_bytes": freed,
            "cleanup_freed_bytes_total": totals["cleanup_freed_bytes"],
            "watchdog_restarts_total": totals["watchdog_restarts"]}


async def _projected(services: Services, wait_s: float) -> dict[str, float]:
    if services.io is None:
        return {}
    try:
        async with asyncio.timeout(wait_s):
            rows = await services.io.latest()
    except (AgentError, TimeoutError):
        return {}
    return {r.name: r.projected_bytes_per_day for r in rows}


class MetricsExporter:
    """Writes the textfile every ``interval_s`` seconds from ``services`` (``path`` "": off)."""

    def __init__(self, services: Services, *, path: str, interval_s: float) -> None:
        self.services, self.path, self.interval_s = services, path, interval_s
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def write_once(self) -> Snapshot:
        """Gather and write one textfile; returns what was written.  Raises OSError."""
        snap = await gather(self.services, io_wait_s=min(5.0, self.interval_s))
        await asyncio.to_thread(write_textfile, self.path, snap)
        return snap

    async def start(self) -> None:
        """Start the write loop (nothing when the path is empty)."""
        if self.path and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="metrics-textfile")

    async def stop(self) -> None:
        """Stop the loop; the last textfile stays (node_exporter shows its mtime)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.write_once()
                self._note(None)
            except OSError as err:  # the text without the temporary file's name
                self._note(f"{self.path}: {err.strerror or err}")
            except AgentError as err:
                self._note(f"{self.path}: {err}")
            except Exception as err:  # e.g. sqlite3 "database is locked": the loop goes on
                if f"{self.path}: {err}" != self.last_error:
                    log.exception("metrics textfile: unexpected error")
                self._note(f"{self.path}: {err}")
            await asyncio.sleep(self.interval_s)

    def _note(self, error: str | None) -> None:
        """Log a failure once, and the recovery, not every interval."""
        if error != self.last_error:
            if error is None:
                log.info("metrics textfile %s written again", self.path)
            else:
                log.warning("metrics textfile not written: %s", error)
        self.last_error = error
