"""Watchdog reaction time: a container's third failed health check to the agent's restart.

The agent's watchdog is event-driven (agent/containers/events.py): Docker's
``health_status`` event wakes a pass after a 0.2 s debounce, the pass
inspects the unhealthy container and restarts it once its FailingStreak
reaches ``watchdog.failures_before_restart`` (3 as shipped).  Each trial
here uses its own ``react-N`` container (tests/integration/watchdog_kit.py's
flip container: HEALTHCHECK every 1 s, healthy while ``/ok`` exists) with
``retries: 3``, so Docker turns it ``unhealthy`` exactly at the third failed
check: the ``health_status: unhealthy`` event *is* the third failure.  The
trial removes ``/ok`` and waits until the container has been restarted.

Per trial, seconds from the ``health_status: unhealthy`` event (Docker's
``timeNano``) to: the agent's restart record (``at``: the watchdog's clock
just before it calls ``POST /containers/{id}/restart``, read from the
agent's state store), Docker's ``kill`` event (the engine sending SIGTERM:
the restart reached Docker) and Docker's ``restart`` event (back up).
Docker and the agent read the same host clock.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from agent.containers.history import WatchdogHistory
from agent.store import Store
from tests.integration.dockerd import TestEngine
from tests.integration.watchdog_kit import run_flip, set_ok, state, wait_for

RETRIES = 3  # Docker's own streak: unhealthy at the third failed check


class EventRecorder(threading.Thread):
    """Follows Docker's ``GET /events`` for ``names`` (health_status, kill, restart) live:
    the engine keeps only its last 256 events, too few to ask for them afterwards."""

    def __init__(self, engine: TestEngine, names: list[str]) -> None:
        super().__init__(daemon=True)
        filters = {"type": ["container"], "container": names,
                   "event": ["health_status", "kill", "restart"]}
        self.stream = engine.client().api.events(since=int(time.time()), filters=filters,
                                                 decode=True)
        self.events: list[dict[str, Any]] = []

    def run(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends when finish() closes it
            for event in self.stream:
                self.events.append(event)

    def finish(self) -> list[dict[str, Any]]:
        """Close the stream; every event seen."""
        self.stream.close()
        self.join(10)
        return list(self.events)


def _first(events: list[dict[str, Any]], name: str, action: str, after: float) -> float | None:
    """Unix seconds of ``name``'s first ``action`` event at or after ``after``."""
    for event in events:
        at = int(event["timeNano"]) / 1e9
        if (event["Actor"]["Attributes"].get("name") == name and event["Action"] == action
                and at >= after):
            return at
    return None


def _trial(engine: TestEngine, name: str, timeout_s: float) -> dict[str, Any]:
    """Make ``name`` fail; wait for its restart; our own clock readings."""
    started_before = state(engine, name)["StartedAt"]
    failed_at = time.time()
    set_ok(engine, name, ok=False)
    wait_for(lambda: state(engine, name)["StartedAt"] != started_before, timeout_s,
             f"{name} restarted by the agent's watchdog")
    return {"container": name, "failed_at": failed_at, "restarted_seen_at": time.time()}


def _figures(trial: dict[str, Any], events: list[dict[str, Any]],
             history: WatchdogHistory) -> dict[str, Any]:
    """Seconds from the unhealthy event to the record, the kill and the restart event."""
    name = trial["container"]
    unhealthy = _first(events, name, "health_status: unhealthy", trial["failed_at"])
    records = [r for r in history.restarts(container=name) if r.at >= trial["failed_at"]]
    if unhealthy is None or not records:
        raise RuntimeError(f"{name}: unhealthy event {unhealthy}, restart records {records}")
    record = records[-1]  # newest first: the oldest after the failure
    kill, restart = (_first(events, name, a, unhealthy) for a in ("kill", "restart"))
    return {"container": name, "failing_streak": record.failing_streak,
            "trigger": record.trigger, "result": record.result,
            "to_record_s": record.at - unhealthy,
            "to_kill_s": None if kill is None else kill - unhealthy,
            "to_restart_event_s": None if restart is None else restart - unhealthy,
            "restart_took_s": record.took_s}


def reaction_phase(engine: TestEngine, state_dir: Path, trials: int,
                   timeout_s: float = 60.0) -> dict[str, Any]:
    """``trials`` containers made to fail one after the other; per trial figures and
    the max/median of each.  The containers are removed at the end.

    ``state_dir`` is the running agent's ``--state-dir``.  Raises AssertionError when
    a container is not restarted within ``timeout_s``, RuntimeError when its
    unhealthy event or the agent's record is missing.
    """
    names = [f"react-{i}" for i in range(trials)]
    for name in names:
        run_flip(engine, name, retries=RETRIES)
    for name in names:
        engine.wait_health(name, "healthy", timeout_s=30)
    time.sleep(RETRIES + 1)  # past the grace period: start_period + interval x retries
    recorder = EventRecorder(engine, names)
    recorder.start()
    try:
        runs = [_trial(engine, name, timeout_s) for name in names]
        time.sleep(1.5)  # the restart event follows the start
    finally:
        events = recorder.finish()
    store = Store(state_dir)
    try:
        each = [_figures(t, events, WatchdogHistory(store)) for t in runs]
    finally:
        store.close()
        for name in names:
            engine.client().api.remove_container(name, force=True)
    out: dict[str, Any] = {"trials": each}
    for key in ("to_record_s", "to_kill_s", "to_restart_event_s"):
        values = sorted(v for t in each if (v := t[key]) is not None)
        out[key] = {"median": statistics.median(values) if values else None,
                    "max": values[-1] if values else None, "n": len(values)}
    return out
