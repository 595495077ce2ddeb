"""The durable outbox: notifications waiting for delivery (table ``outbox``).

A message is written here first (one transaction) and marked sent only
after the transport accepted it (Telegram answered ``ok: true``).  A failed
attempt keeps the message pending with a later ``next_at``; since the row
lives in the SQLite store, nothing is lost across restarts or outages.  A
message that can never be delivered (Telegram refused it for good, or it
ran out of attempts) is parked: status ``dead`` with its last error, never
retried, so it does not block the messages after it (:meth:`Outbox.dead`).
``dedupe_key`` makes an enqueue idempotent (e.g. ``digest:2026-W48``: one
weekly digest, however often the job runs).

Blocking (SQLite): call from the event loop through ``asyncio.to_thread``.
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass

from agent.store import Store

MAX_ERROR_CHARS = 500

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,          -- Unix seconds
    kind TEXT NOT NULL,                -- e.g. alert, digest, healthcheck
    dedupe_key TEXT UNIQUE,            -- NULL = no deduplication
    text TEXT NOT NULL,                -- plain text; the transport escapes it
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    parts_sent INTEGER NOT NULL DEFAULT 0,  -- parts of a split message already accepted
    next_at REAL NOT NULL,             -- Unix seconds: not before this
    last_error TEXT,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, next_at);
"""
STATUSES = ("pending", "sent", "dead")


def _statements(script: str) -> list[str]:
    """The statements of ``script``, cut where ``sqlite3.complete_statement`` says one ends
    (a ``;`` in a comment does not end one)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current)
            current = ""
    return out


def _migrate(store: Store) -> None:
    """Widen the status CHECK of an outbox made before ``dead`` existed (SQLite cannot
    alter a CHECK: copy the rows into a new table, https://sqlite.org/lang_altertable.html)."""
    rows = store.query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox'")
    if not rows or "'dead'" in rows[0]["sql"]:
        return
    with store.tx() as db:
        db.execute("ALTER TABLE outbox RENAME TO outbox_old")
        db.execute("DROP INDEX IF EXISTS outbox_pending")
        for statement in _statements(SCHEMA):
            db.execute(statement)
        db.execute("INSERT INTO outbox SELECT * FROM outbox_old")
        db.execute("DROP TABLE outbox_old")


@dataclass(frozen=True)
class OutboxMessage:
    """One queued message: ``text`` is plain (unescaped) text; times are Unix seconds."""

    id: int
    kind: str
    text: str
    created_at: float
    attempts: int
    next_at: float
    last_error: str | None
    parts_sent: int = 0


def _message(r: sqlite3.Row) -> OutboxMessage:
    return OutboxMessage(r["id"], r["kind"], r["text"], r["created_at"], r["attempts"],
                         r["next_at"], r["last_error"], r["parts_sent"])


class Outbox:
    """Durable queue of notifications in the store (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        _migrate(store)
        store.apply(SCHEMA)

    def enqueue(self, text: str, *, kind: str, dedupe_key: str | None = None,
                at: float | None = None) -> int | None:
        """Queue ``text``; returns its id, or None when ``dedupe_key`` was enqueued before.

        ``at`` (Unix seconds, default now) is the creation time and the first
        due time.  Durable once this returns.
        """
        now = time.time() if at is None else at
        try:
            with self.store.tx() as db:
                cur = db.execute(
                    "INSERT INTO outbox (created_at, kind, dedupe_key, text, next_at)"
                    " VALUES (?,?,?,?,?)", (now, kind, dedupe_key, text, now))
        except sqlite3.IntegrityError:
            return None
        return int(cur.lastrowid or 0)

    def pending(self, limit: int = 50, *, now: float | None = None,
                horizon_s: float = math.inf) -> list[OutboxMessage]:
        """Unsent messages due at ``now`` (default: the current time), oldest first.

        A message whose ``next_at`` is more than ``horizon_s`` seconds after
        ``now`` is due too: no retry delay is that long, so the clock was
        stepped back since the delay was set.
        """
        now = time.time() if now is None else now
        rows = self.store.query(
            "SELECT id, kind, text, created_at, attempts, next_at, last_error, parts_sent"
            " FROM outbox WHERE status = 'pending' AND (next_at <= ? OR next_at > ?)"
            " ORDER BY id LIMIT ?",
            (now, now + horizon_s, limit))
        return [_message(r) for r in rows]

    def mark_sent(self, msg_id: int) -> None:
        """Record that the transport accepted message ``msg_id`` (it is never sent again);
        a parked (``dead``) message stays parked."""
        with self.store.tx() as db:
            db.execute("UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1"
                       " WHERE id = ? AND status = 'pending'", (time.time(), msg_id))

    def mark_part_sent(self, msg_id: int, parts_sent: int) -> None:
        """Record that the first ``parts_sent`` parts of a split message were accepted
        (a retry resumes after them, so no part is sent twice)."""
        with self.store.tx() as db:
            db.execute("UPDATE outbox SET parts_sent = MAX(parts_sent, ?) WHERE id = ?",
                       (parts_sent, msg_id))

    def mark_failed(self, msg_id: int, error: str, retry_at: float) -> None:
        """Record a failed attempt; the message is due again at ``retry_at`` (Unix seconds).

        ``error`` must already be free of secrets (it is stored); it is cut
        to MAX_ERROR_CHARS characters.
        """
        with self.store.tx() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ?"
                       " WHERE id = ? AND status = 'pending'",
                       (retry_at, error[:MAX_ERROR_CHARS], msg_id))

    def mark_dead(self, msg_id: int, error: str) -> None:
        """Park message ``msg_id``: status ``dead`` with ``error`` (cut to MAX_ERROR_CHARS,
        free of secrets); it is never sent or retried again."""
        with self.store.tx() as db:
            db.execute("UPDATE outbox SET status = 'dead', attempts = attempts + 1,"
                       " last_error = ? WHERE id = ? AND status = 'pending'",
                       (error[:MAX_ERROR_CHARS], msg_id))

    def dead(self, limit: int = 50) -> list[OutboxMessage]:
        """Parked messages, newest first (``last_error`` says why)."""
        rows = self.store.query(
            "SELECT id, kind, text, created_at, attempts, next_at, last_error, parts_sent"
            " FROM outbox WHERE status = 'dead' ORDER BY id DESC LIMIT ?",
            (limit,))
        return [_message(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """``{"pending": n, "sent": n, "dead": n}``: messages by status."""
        rows = self.store.query("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
        found = {r["status"]: int(r["n"]) for r in rows}
        return {status: found.get(status, 0) for status in STATUSES}

    def next_due(self) -> float | None:
        """The earliest ``next_at`` (Unix seconds) of an unsent message, or None."""
        rows = self.store.query(
            "SELECT MIN(next_at) AS t FROM outbox WHERE status = 'pending'")
        value = rows[0]["t"] if rows else None
        return None if value is None else float(value)
