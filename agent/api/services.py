"""The services handlers are given: everything domain-side, built by the daemon."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from agent.config import Config
from agent.containers.engine import DockerEngine
from agent.containers.events import WatchdogService
from agent.containers.iorate import IoSampler
from agent.hold import HoldStore
from agent.host.model import HostSample
from agent.jobs.runner import JobRunner
from agent.metrics_export import MetricsExporter
from agent.notify.delivery import Notifier
from agent.notify.events import AlertLog
from agent.notify.outbox import Outbox
from agent.store import Store


class Sampler(Protocol):
    async def latest(self) -> HostSample: ...


@dataclass
class Services:
    """Long-lived dependencies; ``started_monotonic`` is ``time.monotonic()`` at start."""

    config: Config
    config_path: str | None
    config_digest: str
    sampler: Sampler
    hold: HoldStore
    socket_activated: bool = False
    started_monotonic: float = field(default_factory=time.monotonic)
    store: Store | None = None  # the SQLite state store (run history, alerts)
    alerts: AlertLog | None = None
    docker: DockerEngine | None = None
    jobs: JobRunner | None = None  # the job runner (agent.jobs.runner)
    io: IoSampler | None = None  # per-container disk-write rates (GET /v1/io)
    watchdog: WatchdogService | None = None  # containers + watchdog (agent.containers)
    outbox: Outbox | None = None  # durable notification queue (agent.notify.outbox)
    notifier: Notifier | None = None  # alerts -> outbox -> Telegram (agent.notify.delivery)
    metrics: MetricsExporter | None = None  # the textfile for node_exporter (agent.metrics_export)
