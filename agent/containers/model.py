"""The typed container model, built from Docker's answers (pure: no I/O).

Sources (Docker Engine API): ``GET /containers/json`` (the list) and
``GET /containers/{id}/json`` (inspect): ``State`` (Status, StartedAt,
OOMKilled, Health: Status, FailingStreak, Log of at most 5 results),
``RestartCount`` (restarts by Docker's restart policy), ``Config``
(Labels, Healthcheck, StopTimeout), ``HostConfig.Memory`` (the limit,
0 = none).  ``image_created_at`` comes from ``GET /images/{id}/json``
(``Created``).  Memory *use* is read from the container's cgroup (see
:mod:`agent.containers.memory`), passed in here as ``memory_bytes``.

Times are Unix seconds (float) inside the model and RFC 3339 UTC on the
wire; durations are seconds; sizes bytes.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from agent.containers.engine import container_name, health_status

STACK_LABEL: Final = "com.docker.compose.project"
OPT_OUT_LABEL: Final = "vm-agent.watchdog"
#: Docker's defaults for a HEALTHCHECK field left unset (``docker run --help``, Dockerfile ref).
DEFAULT_INTERVAL_S: Final = 30.0
DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_RETRIES: Final = 3
DEFAULT_START_PERIOD_S: Final = 0.0
#: ``docker stop`` / restart default grace before SIGKILL when Config.StopTimeout is unset.
DEFAULT_STOP_TIMEOUT_S: Final = 10
_NS: Final = 1e9
_FRACTION = re.compile(r"(\.\d{1,6})\d*")
#: The health part of a list entry's ``Status`` ("Up 2 hours (unhealthy)"), as ``docker ps``.
_LISTED_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def parse_time(text: str | None) -> float | None:
    """Unix seconds of a Docker timestamp (RFC 3339, nanoseconds); None when unset.

    Docker writes ``0001-01-01T00:00:00Z`` for "never"; that gives None too.
    """
    if not text or text.startswith("0001-01-01"):
        return None
    text = _FRACTION.sub(r"\1", text.replace("Z", "+00:00"), count=1)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def rfc3339(ts: float | None) -> str | None:
    """Unix seconds as RFC 3339 UTC with seconds (``2026-11-29T20:00:00Z``); None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class HealthCheckResult:
    """One entry of ``State.Health.Log``: ``start``/``end`` Unix seconds, probe output."""

    start: float | None
    end: float | None
    exit_code: int
    output: str

    def to_wire(self) -> dict[str, Any]:
        return {"start": rfc3339(self.start), "end": rfc3339(self.end),
                "exit_code": self.exit_code, "output": self.output}


@dataclass(frozen=True)
class Healthcheck:
    """The container's own HEALTHCHECK timing, Docker's defaults filled in (seconds)."""

    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    start_period_s: float = DEFAULT_START_PERIOD_S

    @property
    def grace_s(self) -> float:
        """Seconds after a (re)start before the watchdog may judge it:
        start_period + interval x retries."""
        return self.start_period_s + self.interval_s * self.retries

    def to_wire(self) -> dict[str, Any]:
        return {"interval_s": self.interval_s, "timeout_s": self.timeout_s,
                "retries": self.retries, "start_period_s": self.start_period_s}


def healthcheck_of(config: Mapping[str, Any]) -> Healthcheck | None:
    """``Config.Healthcheck`` (durations in ns; 0 or absent = Docker's default); None when
    there is none or it is disabled (``Test: ["NONE"]``)."""
    hc = config.get("Healthcheck") or {}
    if not hc.get("Test") or hc["Test"][0] == "NONE":
        return None
    return Healthcheck(
        interval_s=(hc.get("Interval") or DEFAULT_INTERVAL_S * _NS) / _NS,
        timeout_s=(hc.get("Timeout") or DEFAULT_TIMEOUT_S * _NS) / _NS,
        retries=int(hc.get("Retries") or DEFAULT_RETRIES),
        start_period_s=(hc.get("StartPeriod") or 0) / _NS,
    )


@dataclass(frozen=True)
class Container:
    """One container as the agent sees it (see the module docstring for sources)."""

    name: str
    id: str
    image: str
    state: str  # created, running, paused, restarting, removing, exited, dead
    health: str  # none, starting, healthy, unhealthy
    stack: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    image_created_at: float | None = None
    started_at: float | None = None
    failing_streak: int = 0
    health_log: tuple[HealthCheckResult, ...] = ()  # oldest first, as Docker keeps it
    healthcheck: Healthcheck | None = None
    restart_count: int = 0
    stop_timeout_s: int = DEFAULT_STOP_TIMEOUT_S
    stop_signal: int = signal.SIGTERM  # Config.StopSignal as a number
    memory_bytes: int | None = None
    memory_limit_bytes: int = 0
    oom_killed: bool = False

    @property
    def opted_out(self) -> bool:
        """True when labelled ``vm-agent.watchdog=off``."""
        return opted_out(self.labels)

    def uptime_s(self, now: float) -> float | None:
        """Seconds since StartedAt while running; None otherwise."""
        if self.state != "running" or self.started_at is None:
            return None
        return round(max(0.0, now - self.started_at), 3)

    def health_since(self) -> tuple[float | None, bool]:
        """(Unix seconds the current health status began, estimated?).

        Unhealthy: the End of the check that made FailingStreak reach
        ``retries`` when that check is still in the log; otherwise estimated
        as newest End - (FailingStreak - retries) x interval.  Healthy: the
        End of the first success after the newest failure in the log.  None
        when the log does not tell.
        """
        if not self.health_log or self.healthcheck is None:
            return None, False
        if self.health == "unhealthy":
            return self._unhealthy_since(self.healthcheck)
        if self.health == "healthy":
            return _first_success_after_failure(self.health_log), False
        return None, False

    def _unhealthy_since(self, hc: Healthcheck) -> tuple[float | None, bool]:
        back = self.failing_streak - hc.retries  # checks after the one that flipped it
        newest = self.health_log[-1].end
        if 0 <= back < len(self.health_log):
            return self.health_log[-1 - back].end, False
        if newest is None:
            return None, True
        return newest - max(back, 0) * hc.interval_s, True


def _first_success_after_failure(log: tuple[HealthCheckResult, ...]) -> float | None:
    for i in range(len(log) - 1, 0, -1):
        if log[i - 1].exit_code != 0 and log[i].exit_code == 0:
            return log[i].end
    return None


def health_log_of(state: Mapping[str, Any]) -> tuple[HealthCheckResult, ...]:
    """``State.Health.Log`` as typed results, oldest first (Docker keeps the newest 5)."""
    entries = ((state.get("Health") or {}).get("Log")) or ()
    return tuple(HealthCheckResult(parse_time(e.get("Start")), parse_time(e.get("End")),
                                   int(e.get("ExitCode", -1)), str(e.get("Output") or ""))
                 for e in entries)


def signal_number(name: str | None) -> int:
    """``Config.StopSignal`` (``SIGTERM``, ``TERM``, ``15``, ``SIGRTMIN+3``) as a number;
    SIGTERM (Docker's default) when unset or unknown."""
    text = (name or "").strip().upper().removeprefix("SIG")
    if text.isdigit():
        return int(text)
    if text.startswith("RTMIN+") and text[6:].isdigit():
        return int(signal.SIGRTMIN) + int(text[6:])
    try:
        return int(signal.Signals["SIG" + text])
    except KeyError:
        return int(signal.SIGTERM)


def opted_out(labels: Mapping[str, str]) -> bool:
    """True when ``labels`` hold ``vm-agent.watchdog=off`` (any case, spaces ignored)."""
    return str(labels.get(OPT_OUT_LABEL, "")).strip().lower() == "off"


def listed_health(listed: Mapping[str, Any]) -> str:
    """``healthy``/``unhealthy``/``starting``/``none`` from a list entry's ``Status`` text."""
    m = _LISTED_HEALTH.search(str(listed.get("Status") or ""))
    return "none" if m is None else m[1].replace("health: ", "")


def from_listed(listed: Mapping[str, Any]) -> Container:
    """A Container from one ``GET /containers/json`` entry: name, id, image, state, health
    and labels only (no health log, timings or counters: those need an inspect)."""
    labels = dict(listed.get("Labels") or {})
    return Container(name=container_name(listed), id=str(listed["Id"]),
                     image=str(listed.get("Image", "")), state=str(listed.get("State", "unknown")),
                     health=listed_health(listed), stack=labels.get(STACK_LABEL), labels=labels)


def from_inspect(inspect: Mapping[str, Any], *, memory_bytes: int | None = None,
                 image_created_at: float | None = None) -> Container:
    """A Container from one ``GET /containers/{id}/json`` answer."""
    state, config = inspect.get("State") or {}, inspect.get("Config") or {}
    labels = dict(config.get("Labels") or {})
    return Container(
        name=str(inspect.get("Name", "")).lstrip("/"), id=str(inspect["Id"]),
        image=str(config.get("Image") or inspect.get("Image", "")),
        state=str(state.get("Status", "unknown")), health=health_status(inspect),
        stack=labels.get(STACK_LABEL), labels=labels, image_created_at=image_created_at,
        started_at=parse_time(state.get("StartedAt")),
        failing_streak=int((state.get("Health") or {}).get("FailingStreak", 0)),
        health_log=health_log_of(state), healthcheck=healthcheck_of(config),
        restart_count=int(inspect.get("RestartCount", 0)),
        stop_timeout_s=int(config.get("StopTimeout") or DEFAULT_STOP_TIMEOUT_S),
        stop_signal=signal_number(config.get("StopSignal")),
        memory_bytes=memory_bytes,
        memory_limit_bytes=int((inspect.get("HostConfig") or {}).get("Memory") or 0),
        oom_killed=bool(state.get("OOMKilled", False)),
    )


def to_wire(c: Container, now: float, watchdog: Mapping[str, Any]) -> dict[str, Any]:
    """The PROTOCOL.md ``GET /v1/containers`` row of ``c`` (``watchdog``: its status)."""
    since, estimated = c.health_since()
    return {
        "name": c.name, "id": c.id, "stack": c.stack, "image": c.image,
        "image_created_at": rfc3339(c.image_created_at), "state": c.state,
        "health": c.health, "health_since": rfc3339(since),
        "health_since_estimated": estimated, "failing_streak": c.failing_streak,
        "uptime_s": c.uptime_s(now), "restart_count": c.restart_count,
        "memory_bytes": c.memory_bytes, "memory_limit_bytes": c.memory_limit_bytes,
        "oom_killed": c.oom_killed, "watchdog": dict(watchdog),
    }


def newest_checks(c: Container, count: int) -> list[dict[str, Any]]:
    """The newest ``count`` health-check results, newest first, wire shape."""
    return [r.to_wire() for r in reversed(c.health_log[-count:])] if count > 0 else []
