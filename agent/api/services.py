"""The services handlers are given: everything domain-side, built by the daemon."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from agent.config import Config
from agent.hold import HoldStore
from agent.host.model import HostSample


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
