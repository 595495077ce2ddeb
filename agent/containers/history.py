"""Watchdog history in the state store (SQLite, WAL): restarts, tripped breakers, OOM kills.

Keyed by container **id** (a container recreated by compose gets a new id and
so a clean history); the name is kept for humans.  Methods block (SQLite):
call them through ``asyncio.to_thread`` from the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from agent.containers.watchdog import History
from agent.store import Store

RestartResult = Literal["ok", "failed", "vanished"]
Trigger = Literal["watchdog", "operator"]
KEEP_S = 30 * 86400  # restart and OOM records older than this are pruned

SCHEMA = """
CREATE TABLE IF NOT EXISTS container_restarts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,              -- Unix seconds the restart was started
    container TEXT NOT NULL,
    container_id TEXT NOT NULL,
    trigger TEXT NOT NULL CHECK (trigger IN ('watchdog', 'operator')),
    failing_streak INTEGER NOT NULL,
    result TEXT NOT NULL CHECK (result IN ('ok', 'failed', 'vanished')),
    took_s REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS container_restarts_id_at ON container_restarts (container_id, at);
CREATE INDEX IF NOT EXISTS container_restarts_at ON container_restarts (at);
CREATE TABLE IF NOT EXISTS watchdog_breakers (
    container_id TEXT PRIMARY KEY,
    container TEXT NOT NULL,
    gave_up_at REAL NOT NULL,
    restart_count INTEGER NOT NULL  -- Docker's RestartCount when it tripped
);
CREATE TABLE IF NOT EXISTS container_ooms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    container TEXT NOT NULL,
    container_id TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class RestartRecord:
    """One restart the agent attempted; ``took_s`` seconds; ``error`` when it failed."""

    at: float
    container: str
    container_id: str
    trigger: Trigger
    failing_streak: int
    result: RestartResult
    took_s: float
    error: str | None = None


class WatchdogHistory:
    """The watchdog's tables in ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.apply(SCHEMA)

    def load(self, ids: Iterable[str], *, now: float, window_s: float) -> dict[str, History]:
        """History per id: attempted restarts (ok or failed) in the window, breaker state."""
        wanted = set(ids)
        restarts: dict[str, list[float]] = {}
        for row in self.store.query(
                "SELECT container_id, at FROM container_restarts WHERE at > ? AND "
                "result != 'vanished' ORDER BY at", (now - window_s,)):
            if row["container_id"] in wanted:
                restarts.setdefault(row["container_id"], []).append(row["at"])
        breakers = {r["container_id"]: r for r in self.store.query(
            "SELECT container_id, gave_up_at, restart_count FROM watchdog_breakers")}
        return {i: _history(restarts.get(i, []), breakers.get(i)) for i in wanted}

    def tripped_ids(self) -> list[str]:
        """Ids whose breaker is tripped."""
        return [r["container_id"] for r in self.store.query(
            "SELECT container_id FROM watchdog_breakers ORDER BY gave_up_at")]

    def record_restart(self, rec: RestartRecord) -> None:
        """Store one attempted restart; prunes records older than 30 days."""
        with self.store.tx() as db:
            db.execute(
                "INSERT INTO container_restarts (at, container, container_id, trigger, "
                "failing_streak, result, took_s, error) VALUES (?,?,?,?,?,?,?,?)",
                (rec.at, rec.container, rec.container_id, rec.trigger, rec.failing_streak,
                 rec.result, round(rec.took_s, 3), rec.error))
            db.execute("DELETE FROM container_restarts WHERE at < ?", (rec.at - KEEP_S,))

    def trip(self, container_id: str, container: str, *, at: float, restart_count: int) -> None:
        """Mark the breaker of ``container_id`` as tripped."""
        with self.store.tx() as db:
            db.execute("INSERT OR REPLACE INTO watchdog_breakers VALUES (?,?,?,?)",
                       (container_id, container, at, restart_count))

    def reset(self, container_id: str) -> bool:
        """Clear the breaker; True when one was tripped."""
        with self.store.tx() as db:
            cur = db.execute("DELETE FROM watchdog_breakers WHERE container_id = ?",
                             (container_id,))
        return cur.rowcount > 0

    def record_oom(self, container: str, container_id: str, *, at: float) -> None:
        """Store one OOM kill seen in Docker's event stream."""
        with self.store.tx() as db:
            db.execute("INSERT INTO container_ooms (at, container, container_id) VALUES (?,?,?)",
                       (at, container, container_id))
            db.execute("DELETE FROM container_ooms WHERE at < ?", (at - KEEP_S,))

    def restarts(self, *, limit: int = 100, container: str | None = None) -> list[RestartRecord]:
        """The newest ``limit`` restart records (optionally of one name), newest first."""
        rows = self.store.query(
            "SELECT at, container, container_id, trigger, failing_streak, result, took_s, "
            "error FROM container_restarts WHERE (? IS NULL OR container = ?) "
            "ORDER BY id DESC LIMIT ?", (container, container, limit))
        return [RestartRecord(**dict(r)) for r in rows]

    def ooms(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` OOM kills ``{at, container, container_id}``, newest first."""
        return [dict(r) for r in self.store.query(
            "SELECT at, container, container_id FROM container_ooms ORDER BY id DESC LIMIT ?",
            (limit,))]


def _history(restarts: list[float], breaker: sqlite3.Row | None) -> History:
    if breaker is None:
        return History(restarts=tuple(restarts))
    return History(restarts=tuple(restarts), gave_up_at=breaker["gave_up_at"],
                   gave_up_restart_count=breaker["restart_count"])
