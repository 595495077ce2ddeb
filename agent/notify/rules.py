"""Alert rules: which alert events become notifications.

Per (kind, subject) the store keeps the last level seen and the level the
human last heard about (table ``alert_state``), so the rules survive
restarts:

- a *stateful* kind (``io.write_rate``...) notifies when the level differs
  from the one last notified: OK->WARN and WARN->CRIT alert, WARN->WARN
  does not;
- a recovery (WARN/CRIT -> OK) is always announced at once;
- a raise from OK and a drop CRIT->WARN are limited by the cooldown
  (``alerts.cooldown_s`` since the last non-OK notification); one held back
  is sent when the cooldown ends (:meth:`AlertStates.held`), if the level
  still differs;  an escalation (WARN->CRIT) is never held;
- a *one-off* kind (``alerts.one_off_kinds``: ``container.oom``,
  ``job.failed``...) notifies on every event, cooldown-limited; the next
  message says how many were held back;
- quiet start-up: an event processed as *baseline* updates the state and
  notifies nothing.

The decision (:func:`decide`) is pure; :class:`AlertStates` is the SQLite side.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from typing import Literal

from agent.config import AlertsConfig
from agent.notify.events import AlertLevel
from agent.store import Store

Reason = Literal["raised", "escalated", "changed", "recovered", "one_off", "steady",
                 "cooldown", "baseline"]
RANK: dict[str, int] = {"OK": 0, "WARN": 1, "CRIT": 2}
ICON: dict[str, str] = {"OK": "\U0001F7E2", "WARN": "\U0001F7E0", "CRIT": "\U0001F534"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_state (
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    level TEXT NOT NULL,            -- the last level seen
    notified_level TEXT NOT NULL,   -- the level the human last heard about
    alerted_at REAL,                -- Unix seconds of the last non-OK notification
    suppressed INTEGER NOT NULL DEFAULT 0,  -- events held back since the last notification
    last_event_id INTEGER NOT NULL,
    text TEXT NOT NULL,             -- the last event's text
    PRIMARY KEY (kind, subject)
);
CREATE TABLE IF NOT EXISTS alert_cursor (
    name TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL        -- the last alert_events.id processed
);
"""


@dataclass(frozen=True)
class StoredEvent:
    """A row of ``alert_events``: ``at`` in Unix seconds."""

    id: int
    at: float
    kind: str
    subject: str
    level: AlertLevel
    text: str


@dataclass(frozen=True)
class AlertState:
    """What is known about one (kind, subject); ``alerted_at`` in Unix seconds or None."""

    level: AlertLevel
    notified_level: AlertLevel
    alerted_at: float | None
    suppressed: int
    last_event_id: int
    text: str


@dataclass(frozen=True)
class Decision:
    """The outcome of one event: ``text`` is the notification (plain text) or None."""

    reason: Reason
    state: AlertState
    text: str | None


def initial_state() -> AlertState:
    """The state of a (kind, subject) never seen: OK, nothing notified."""
    return AlertState("OK", "OK", None, 0, 0, "")


def in_cooldown(state: AlertState, now: float, cooldown_s: float) -> bool:
    """True while ``now`` is less than ``cooldown_s`` after the last non-OK notification.

    A ``now`` before that notification (the clock was stepped back) is not in
    cooldown, so a step back cannot hold alerts for as long as the step.
    """
    return state.alerted_at is not None and 0 <= now - state.alerted_at < cooldown_s


def decide(event: StoredEvent, prev: AlertState | None, cfg: AlertsConfig, *,
           baseline: bool = False) -> Decision:
    """Apply the rules (module docstring) to ``event`` given the state before it."""
    prev = prev or initial_state()
    seen = replace(prev, level=event.level, last_event_id=event.id, text=event.text)
    if baseline:
        return Decision("baseline", replace(seen, notified_level=event.level), None)
    if event.kind in cfg.one_off_kinds:
        return _one_off(event, seen, cfg)
    reason = _transition(prev.notified_level, event.level)
    if reason == "steady":
        return Decision("steady", seen, None)
    if reason in ("raised", "changed") and in_cooldown(prev, event.at, cfg.cooldown_s):
        return Decision("cooldown", replace(seen, suppressed=prev.suppressed + 1), None)
    return _notify(event, seen, reason)


def _transition(notified: AlertLevel, level: AlertLevel) -> Reason:
    if level == notified:
        return "steady"
    if level == "OK":
        return "recovered"
    if notified == "OK":
        return "raised"
    return "escalated" if RANK[level] > RANK[notified] else "changed"


def _one_off(event: StoredEvent, seen: AlertState, cfg: AlertsConfig) -> Decision:
    seen = replace(seen, notified_level=event.level)
    if in_cooldown(seen, event.at, cfg.cooldown_s):
        return Decision("cooldown", replace(seen, suppressed=seen.suppressed + 1), None)
    return _notify(event, seen, "one_off")


def _notify(event: StoredEvent, seen: AlertState, reason: Reason) -> Decision:
    text = message_text(event.kind, event.subject, event.level, event.text, reason=reason,
                        held=seen.suppressed)
    alerted_at = seen.alerted_at if event.level == "OK" else event.at
    state = replace(seen, notified_level=event.level, alerted_at=alerted_at, suppressed=0)
    return Decision(reason, state, text)


def message_text(kind: str, subject: str, level: str, text: str, *, reason: Reason,
                 held: int = 0) -> str:
    """The plain-text notification: ``<icon> LEVEL kind subject`` then the event's text."""
    label = {"recovered": "recovered", "escalated": "escalated"}.get(reason, "")
    head = f"{ICON.get(level, '')} {level}{' ' + label if label else ''}: {kind} {subject}"
    tail = f"\n({held} more held back by the cooldown)" if held else ""
    return f"{head.strip()}\n{text}{tail}"


class AlertStates:
    """The ``alert_state`` and ``alert_cursor`` tables (blocking SQLite calls)."""

    CURSOR = "notify"

    def __init__(self, store: Store) -> None:
        self.store = store
        store.apply(SCHEMA)

    def get(self, kind: str, subject: str) -> AlertState | None:
        """The stored state of (kind, subject), or None when never seen."""
        rows = self.store.query("SELECT * FROM alert_state WHERE kind = ? AND subject = ?",
                                (kind, subject))
        return _state(rows[0]) if rows else None

    def cursor(self) -> int | None:
        """The last processed ``alert_events.id``; None before the first start."""
        rows = self.store.query("SELECT last_id FROM alert_cursor WHERE name = ?",
                                (self.CURSOR,))
        return int(rows[0]["last_id"]) if rows else None

    def set_cursor(self, last_id: int) -> None:
        """Record ``last_id`` as processed (no state change)."""
        with self.store.tx() as db:
            self._cursor(db, last_id)

    def commit(self, kind: str, subject: str, state: AlertState) -> None:
        """Store ``state`` and move the cursor to its event, in one transaction."""
        with self.store.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO alert_state (kind, subject, level, notified_level,"
                " alerted_at, suppressed, last_event_id, text) VALUES (?,?,?,?,?,?,?,?)",
                (kind, subject, state.level, state.notified_level, state.alerted_at,
                 state.suppressed, state.last_event_id, state.text))
            self._cursor(db, state.last_event_id)

    def held(self, now: float, cfg: AlertsConfig) -> list[tuple[str, str, AlertState]]:
        """(kind, subject, state) of stateful alerts whose level change was held back by a
        cooldown that has ended at ``now`` (Unix seconds)."""
        rows = self.store.query("SELECT * FROM alert_state WHERE level != notified_level")
        found = [(r["kind"], r["subject"], _state(r)) for r in rows
                 if r["kind"] not in cfg.one_off_kinds]
        return [f for f in found if not in_cooldown(f[2], now, cfg.cooldown_s)]

    def _cursor(self, db: sqlite3.Connection, last_id: int) -> None:
        db.execute("INSERT INTO alert_cursor (name, last_id) VALUES (?, ?) ON CONFLICT(name)"
                   " DO UPDATE SET last_id = MAX(last_id, excluded.last_id)",
                   (self.CURSOR, last_id))


def release_held(kind: str, subject: str, state: AlertState, now: float
                 ) -> tuple[str, AlertState]:
    """The notification for a held-back change whose cooldown ended, and the new state."""
    reason: Reason = "raised" if state.notified_level == "OK" else "changed"
    text = message_text(kind, subject, state.level, state.text, reason=reason,
                        held=max(0, state.suppressed - 1))
    return text, replace(state, notified_level=state.level, alerted_at=now, suppressed=0)


def _state(row: sqlite3.Row) -> AlertState:
    return AlertState(row["level"], row["notified_level"], row["alerted_at"],
                      int(row["suppressed"]), int(row["last_event_id"]), row["text"])
