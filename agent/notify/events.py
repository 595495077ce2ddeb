"""Alert events: what jobs and the watchdog raise for a human to see.

An event is recorded in the state store (table ``alert_events``) and
audited; turning events into notifications (transitions, cooldowns,
Telegram) reads from that table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from agent.audit import Auditor
from agent.store import Store

AlertLevel = Literal["OK", "WARN", "CRIT"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,            -- Unix seconds
    kind TEXT NOT NULL,          -- e.g. watchdog.restart, watchdog.gave_up, oom, job.failed
    subject TEXT NOT NULL,       -- e.g. a container name or a job name
    level TEXT NOT NULL CHECK (level IN ('OK', 'WARN', 'CRIT')),
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_events_at ON alert_events (at);
CREATE INDEX IF NOT EXISTS alert_events_kind_subject ON alert_events (kind, subject, id);
"""


@dataclass(frozen=True)
class AlertEvent:
    """One alert: ``kind`` dotted (``watchdog.gave_up``), ``subject`` what it is about,
    ``level`` OK/WARN/CRIT, ``text`` plain words for a human."""

    kind: str
    subject: str
    level: AlertLevel
    text: str


class AlertLog:
    """Records alert events in the store and the audit trail; never raises on audit failure."""

    def __init__(self, store: Store, auditor: Auditor) -> None:
        self.store = store
        self.auditor = auditor
        store.apply(SCHEMA)

    def emit(self, event: AlertEvent, *, at: float | None = None) -> int:
        """Record ``event`` (at Unix seconds ``at``, default now); returns its id."""
        with self.store.tx() as db:
            cur = db.execute(
                "INSERT INTO alert_events (at, kind, subject, level, text) VALUES (?,?,?,?,?)",
                (time.time() if at is None else at, event.kind, event.subject, event.level,
                 event.text))
        self.auditor.action("alert", message=event.text, kind=event.kind,
                            subject=event.subject, level=event.level)
        return int(cur.lastrowid or 0)

    def recent(self, limit: int = 100) -> list[AlertEvent]:
        """The newest ``limit`` events, newest first."""
        rows = self.store.query(
            "SELECT kind, subject, level, text FROM alert_events ORDER BY id DESC LIMIT ?",
            (limit,))
        return [AlertEvent(r["kind"], r["subject"], r["level"], r["text"]) for r in rows]
