"""The durable outbox: notifications waiting for delivery (table ``outbox``).

A message is written here first (one transaction) and marked sent only
after the transport accepted it (Telegram answered ``ok: true``).  A failed
attempt keeps the message pending with a later ``next_at``; since the row
lives in the SQLite store, nothing is lost across restarts or outages.
``dedupe_key`` makes an enqueue idempotent (e.g. ``digest:2026-W48``: one
weekly digest, however often the job runs).

Blocking (SQLite): call from the event loop through ``asyncio.to_thread``.
"""

from __future__ import annotations

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
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent')),
    attempts INTEGER NOT NULL DEFAULT 0,
    parts_sent INTEGER NOT NULL DEFAULT 0,  -- parts of a split message already accepted
    next_at REAL NOT NULL,             -- Unix seconds: not before this
    last_error TEXT,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, next_at);
"""


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


class Outbox:
    """Durable queue of notifications in the store (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
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

    def pending(self, limit: int = 50, *, now: float | None = None) -> list[OutboxMessage]:
        """Unsent messages due at ``now`` (default: the current time), oldest first."""
        rows = self.store.query(
            "SELECT id, kind, text, created_at, attempts, next_at, last_error, parts_sent"
            " FROM outbox"
            " WHERE status = 'pending' AND next_at <= ? ORDER BY id LIMIT ?",
            (time.time() if now is None else now, limit))
        return [OutboxMessage(r["id"], r["kind"], r["text"], r["created_at"], r["attempts"],
                              r["next_at"], r["last_error"], r["parts_sent"]) for r in rows]

    def mark_sent(self, msg_id: int) -> None:
        """Record that the transport accepted message ``msg_id`` (it is never sent again)."""
        with self.store.tx() as db:
            db.execute("UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1"
                       " WHERE id = ?", (time.time(), msg_id))

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

    def counts(self) -> dict[str, int]:
        """``{"pending": n, "sent": n}``: messages by status."""
        rows = self.store.query("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
        found = {r["status"]: int(r["n"]) for r in rows}
        return {"pending": found.get("pending", 0), "sent": found.get("sent", 0)}

    def next_due(self) -> float | None:
        """The earliest ``next_at`` (Unix seconds) of an unsent message, or None."""
        rows = self.store.query(
            "SELECT MIN(next_at) AS t FROM outbox WHERE status = 'pending'")
        value = rows[0]["t"] if rows else None
        return None if value is None else float(value)
