"""Stops in progress: a ``docker stop`` or ``docker compose down`` the watchdog must not undo.

``docker stop`` sends the container's stop signal and waits up to its
StopTimeout for the exit; until then Docker still says ``running`` and the
health checks keep failing.  A ``POST /containers/{id}/restart`` sent in that
window waits for the same exit and then *starts* the container again: the
operator's stop is undone (and ``compose down``'s remove then fails on a
running container).  Docker's state has no "stopping"; its event stream
does: the stop logs a ``kill`` event with ``Actor.Attributes.signal``.

A container counts as being stopped when a ``kill`` event with a stopping
signal (SIGINT, SIGQUIT, SIGKILL, SIGTERM or its own ``Config.StopSignal``)
was logged after its StartedAt.  Two sources, so a lost one does not matter:
:class:`StopLog`, fed by the agent's event follower, and Docker's own event
log (``GET /events?since&until``; Docker keeps only its newest 256 events, so
in a busy engine a long stop's event may be gone).  The agent's own restarts
log a ``kill`` too, but a restart ends with a new StartedAt, after it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable, Mapping
from typing import Any

from agent.containers.engine import DockerEngine
from agent.containers.model import Container
from agent.errors import AgentError

STOPPING_SIGNALS = frozenset({signal.SIGINT, signal.SIGQUIT, signal.SIGKILL, signal.SIGTERM})
_KEEP = 8  # kill events kept per container id


class StopLog:
    """``kill`` events seen in Docker's event stream: id -> [(Unix seconds, signal number)]."""

    def __init__(self) -> None:
        self._kills: dict[str, list[tuple[float, int]]] = {}

    def note(self, event: Mapping[str, Any]) -> None:
        """Record a ``kill`` event (others: ``destroy`` forgets the id; the rest is ignored)."""
        actor = event.get("Actor") or {}
        cid, action = str(actor.get("ID") or ""), str(event.get("Action") or "")
        if action == "destroy":
            self._kills.pop(cid, None)
        elif action == "kill" and cid:
            kills = self._kills.setdefault(cid, [])
            kills.append((event_time(event), signal_of(actor.get("Attributes") or {})))
            del kills[:-_KEEP]

    def kills(self, container_id: str) -> list[tuple[float, int]]:
        """The kills recorded for ``container_id``, oldest first."""
        return list(self._kills.get(container_id, ()))


def event_time(event: Mapping[str, Any]) -> float:
    """Unix seconds of a Docker event (``timeNano``, else ``time``)."""
    nano = event.get("timeNano")
    return float(nano) / 1e9 if nano else float(event.get("time") or 0)


def signal_of(attributes: Mapping[str, Any]) -> int:
    """The signal number of a ``kill`` event's attributes (``"15"``); 0 when absent."""
    text = str(attributes.get("signal") or "0")
    return int(text) if text.isdigit() else 0


def stopping_kill(c: Container, kills: Iterable[tuple[float, int]]) -> bool:
    """True when one of ``kills`` is a stopping signal sent after ``c`` last started."""
    started = c.started_at if c.started_at is not None else float("-inf")
    wanted = STOPPING_SIGNALS | {c.stop_signal}
    return any(at > started and sig in wanted for at, sig in kills)


async def being_stopped(engine: DockerEngine, stops: StopLog,
                        containers: Iterable[Container]) -> frozenset[str]:
    """The ids of ``containers`` a stop is in progress for (see the module docstring).

    Docker's event log is asked only for the ones :class:`StopLog` does not settle;
    when it cannot be asked, the StopLog alone decides.
    """
    found = set()
    for c in containers:
        kills = stops.kills(c.id)
        if not stopping_kill(c, kills) and c.started_at is not None:
            kills = await _logged_kills(engine, c.id, since=c.started_at)
        if stopping_kill(c, kills):
            found.add(c.id)
    return frozenset(found)


async def _logged_kills(engine: DockerEngine, container_id: str, *,
                        since: float) -> list[tuple[float, int]]:
    try:  # until: now (Docker's clock is the host's); a later one makes Docker wait for it
        events = await engine.events(since=since, until=time.time(),
                                     filters={"container": [container_id], "event": ["kill"]})
    except AgentError:
        return []
    return [(event_time(e), signal_of((e.get("Actor") or {}).get("Attributes") or {}))
            for e in events]
