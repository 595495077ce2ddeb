"""The settings table: every key the agent reads, its type, default and bounds.

The dataclasses below *are* the declarative table.  Each field's
``metadata`` carries ``help`` (one line for the docs and the shipped YAML)
and optional bounds: ``min``/``max`` (inclusive), ``choices``, ``pattern``
(``re.fullmatch``); bounds of a list field apply to each element.  Other
metadata: ``env`` (an environment variable that, when set and non-empty,
replaces the default; a value in a file still wins), ``octal`` (docs show
the default in octal), ``lower_is_worse`` (on a threshold).  A dataclass may
define ``validate(self) -> None`` raising ``ConfigError`` for cross-field
rules; its ``key`` is relative to that dataclass (``"crit"``,
``"memory_available_bytes.crit"``).  Every field needs a default.
``agent.configload`` walks these classes to load YAML strictly: an unknown
key, a wrong type or an out-of-range value raises
:class:`agent.errors.ConfigError` naming the dotted key path and what is
allowed, and ``vm-agent serve`` exits 78 (EX_CONFIG).

Units: sizes in bytes, durations in seconds, percentages 0-100.
GB/MB in the defaults are decimal (10^9 / 10^6 bytes), as Docker and df -H count.
"""

# _f/_sub/_t return dataclasses.field(...) objects, not shared mutable defaults:
# ruff: noqa: RUF009

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from agent.errors import ConfigError


def _f(default: Any, help: str, **bounds: Any) -> Any:
    """A settings-table field: default, one-line help, optional bounds."""
    if isinstance(default, list | dict):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata={"help": help, **bounds})


def _sub(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help})


def default_docker_host() -> str:
    """``DOCKER_HOST`` when set, else the standard socket ``unix:///var/run/docker.sock``."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class ServerConfig:
    socket: str = _f("/run/vm-agent/agent.sock",
                     "Unix socket path when run by hand (under systemd the socket unit decides)")
    socket_mode: int = _f(0o660, "mode of a socket the agent binds itself", min=0, max=0o777,
                          octal=True)
    max_connections: int = _f(64, "concurrent client connections; more are refused with 429",
                              min=1, max=4096)
    client_timeout_s: float = _f(10.0, "seconds a client may take to send a whole request "
                                 "(and idle between keep-alive requests)", min=0.1, max=600)
    shutdown_timeout_s: float = _f(10.0, "on SIGTERM, seconds in-flight requests get to finish",
                                   min=0, max=300)


@dataclass(frozen=True)
class RoleConfig:
    uids: tuple[int, ...] = _f((), "numeric user ids in this role", min=0)
    gids: tuple[int, ...] = _f((), "numeric group ids in this role (primary or supplementary)",
                               min=0)
    groups: tuple[str, ...] = _f((), "group names in this role, resolved at start-up; "
                                 "a missing group is logged and ignored")


@dataclass(frozen=True)
class AccessConfig:
    viewer: RoleConfig = field(
        default_factory=lambda: RoleConfig(groups=("vm-agent",)),
        metadata={"help": "peers that may run every GET command"})
    operator: RoleConfig = field(
        default_factory=lambda: RoleConfig(groups=("vm-agent-ops",)),
        metadata={"help": "peers that may run every command; uid 0 is always operator"})


@dataclass(frozen=True)
class SamplingConfig:
    interval_s: float = _f(10.0, "seconds between background host samples", min=1, max=3600)
    cpu_window_s: float = _f(1.0, "window over which steal and iowait are measured "
                             "(two /proc/stat reads this far apart)", min=0.1, max=60)
    disks: tuple[str, ...] = _f(("/",), "mount points whose usage is sampled")
    proc_root: str = _f("/proc", "where procfs is mounted (tests point it at a temp tree)")


@dataclass(frozen=True)
class Threshold:
    """``warn``/``crit`` limits of one metric; ``null`` disables that level.

    For metrics where higher is worse a value strictly above ``warn`` is WARN
    and strictly above ``crit`` is CRIT; for ``memory_available_bytes`` (lower
    is worse) strictly below.
    """

    warn: float | None = _f(None, "WARN limit (null: never WARN)", min=0)
    crit: float | None = _f(None, "CRIT limit (null: never CRIT)", min=0)


def _t(warn: float | None, crit: float | None, help: str, **flags: Any) -> Any:
    return field(default_factory=lambda: Threshold(warn, crit), metadata={"help": help, **flags})


@dataclass(frozen=True)
class ThresholdsConfig:
    steal_percent: Threshold = _t(5, 15, "CPU steal, percent 0-100 (roadmap: >5 WARN, >15 CRIT)")
    iowait_percent: Threshold = _t(20, 50, "CPU iowait, percent 0-100")
    swap_used_bytes: Threshold = _t(1.5e9, 4e9, "swap used = SwapTotal - SwapFree, bytes "
                                    "(roadmap: > 1.5 GB WARN)")
    swap_cached_bytes: Threshold = _t(200e6, None, "SwapCached, bytes: an early sign of memory "
                                      "pressure (roadmap: > 200 MB WARN)")
    memory_available_bytes: Threshold = _t(1e9, 500e6, "MemAvailable, bytes; lower is worse",
                                           lower_is_worse=True)
    disk_used_percent: Threshold = _t(80, 90, "used / (used + available) per mount, percent")
    load1_per_core: Threshold = _t(1.5, 3.0, "1-minute load average divided by cores")
    unhealthy_containers: Threshold = _t(0, 5, "count of containers whose health is unhealthy")

    @classmethod
    def lower_is_worse(cls, metric: str) -> bool:
        """True for metrics where a value *below* the limit is bad (``memory_available_bytes``)."""
        return any(f.name == metric and f.metadata.get("lower_is_worse", False)
                   for f in fields(cls))

    def validate(self) -> None:
        """Raise ``ConfigError`` unless each ``crit`` lies beyond its ``warn`` (worse side)."""
        for f in fields(self):
            t: Threshold = getattr(self, f.name)
            if t.warn is None or t.crit is None:
                continue
            lower = self.lower_is_worse(f.name)
            if (t.crit >= t.warn) if lower else (t.crit <= t.warn):
                side = "below" if lower else "above"
                raise ConfigError(f"{f.name}.crit", f"crit ({t.crit:g}) must be {side} warn "
                                  f"({t.warn:g}): {'lower' if lower else 'higher'} is worse")


@dataclass(frozen=True)
class DockerConfig:
    host: str = _f("unix:///var/run/docker.sock",
                   "Docker endpoint; default DOCKER_HOST when set, else the standard socket",
                   pattern=r"(unix|tcp|ssh|npipe)://.+", env="DOCKER_HOST")
    timeout_s: float = _f(5.0, "timeout of one Docker API call, seconds", min=0.5, max=300)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = _sub(ServerConfig, "the protocol server")
    access: AccessConfig = _sub(AccessConfig, "who may do what (SO_PEERCRED uid/gid -> role)")
    sampling: SamplingConfig = _sub(SamplingConfig, "the background host sampler")
    thresholds: ThresholdsConfig = _sub(ThresholdsConfig, "OK/WARN/CRIT limits per metric")
    docker: DockerConfig = _sub(DockerConfig, "the Docker engine")
    state_dir: str = _f("/var/lib/vm-agent", "where the hold, the run history and the "
                        "watchdog state are kept")
    run_dir: str = _f("/run/vm-agent", "runtime files: job locks")
