"""Builds, starts and stops the domain services; the daemon and the protocol tests share it.

Order matters: the store and the alert log first (the job runner, the io
sampler and the watchdog write to them), then the samplers and the watchdog.
Stopping goes the other way round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from agent.api.services import Services
from agent.audit import Auditor
from agent.config import Config
from agent.configload import config_digest as digest_of
from agent.containers.engine import DockerEngine
from agent.containers.events import build_watchdog_service
from agent.containers.iorate import DockerLister, IoSampler
from agent.hold import HoldStore
from agent.host.history import HostHistory
from agent.host.model import HostSample
from agent.host.sampler import HostSampler, SampleSink
from agent.jobs.base import Job
from agent.jobs.catalog import build_jobs
from agent.jobs.records import RunRecords
from agent.jobs.runner import JobRunner
from agent.metrics_export import MetricsExporter
from agent.notify.delivery import Notifier
from agent.notify.events import AlertLog
from agent.notify.outbox import Outbox
from agent.store import Store


def build_services(cfg: Config, auditor: Auditor, *, config_path: str | None = None,
                   config_digest: str | None = None, socket_activated: bool = False,
                   jobs: Mapping[str, Job] | None = None) -> Services:
    """Every long-lived service for ``cfg``, built but not started.

    ``jobs`` replaces the job catalog (tests register a test job);
    ``config_digest`` defaults to the digest of ``cfg``.  Opens
    (and creates) the SQLite store under ``cfg.state_dir``.
    """
    docker = DockerEngine(cfg.docker.host, cfg.docker.timeout_s)
    store = Store(cfg.state_dir)
    alerts = AlertLog(store, auditor)
    hold = HoldStore(cfg.state_dir)
    services = Services(
        config=cfg, config_path=config_path,
        config_digest=config_digest or digest_of(cfg),
        sampler=HostSampler(cfg.sampling, cfg.thresholds, docker.summary,
                            on_sample=host_recorder(store)), hold=hold,
        socket_activated=socket_activated, store=store, alerts=alerts, docker=docker)
    services.jobs = JobRunner(jobs=build_jobs(cfg) if jobs is None else dict(jobs),
                              records=RunRecords(store), config=cfg, auditor=auditor,
                              hold=hold, alerts=alerts, services=services)
    services.io = IoSampler(
        cfg.io, DockerLister(docker), interval_s=cfg.sampling.interval_s,
        cgroup_root=cfg.docker.cgroup_root, proc_root=cfg.sampling.proc_root,
        emit=lambda event: asyncio.to_thread(alerts.emit, event))
    services.watchdog = build_watchdog_service(cfg, docker, store=store, alerts=alerts,
                                               auditor=auditor, hold=hold)
    services.outbox = Outbox(store)
    services.notifier = Notifier(cfg, store, outbox=services.outbox)
    services.metrics = MetricsExporter(services, path=cfg.metrics.textfile,
                                       interval_s=cfg.metrics.interval_s)
    return services


def host_recorder(store: Store) -> SampleSink:
    """Each background host sample folded into the hourly history (SQLite off the loop)."""
    history = HostHistory(store)

    async def record(sample: HostSample) -> None:
        await asyncio.to_thread(history.record, sample)
    return record


async def start_services(services: Services) -> None:
    """Recover interrupted runs, then start the host sampler, the io sampler and the watchdog."""
    assert services.jobs is not None and services.io is not None
    assert services.watchdog is not None and isinstance(services.sampler, HostSampler)
    await services.jobs.recover_stale()
    await services.sampler.start()
    await services.io.start()
    await services.watchdog.start()
    if services.notifier is not None:
        await services.notifier.start()
    if services.metrics is not None:
        await services.metrics.start()


async def stop_services(services: Services) -> None:
    """Give running jobs their grace period, then stop the samplers, the watchdog, Docker."""
    if services.metrics is not None:
        await services.metrics.stop()
    if services.notifier is not None:
        await services.notifier.stop()
    if services.jobs is not None:
        await services.jobs.close()
    if isinstance(services.sampler, HostSampler):
        await services.sampler.stop()
    if services.io is not None:
        await services.io.stop()
    if services.watchdog is not None:
        await services.watchdog.stop()
    if services.docker is not None:
        await services.docker.aclose()
