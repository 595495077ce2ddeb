"""The metrics textfile's inputs kept in or read from the state store (agent/store.py).

Counters that must never go down (``vmagent_cleanup_freed_bytes_total``,
``vmagent_watchdog_restarts_total``) are kept in table ``metric_totals``:
each export adds the source rows newer than the last one counted, so
pruning old run or restart records never lowers them.  Blocking (SQLite):
call through ``asyncio.to_thread`` from the event loop.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from agent.containers.history import SCHEMA as RESTARTS_SCHEMA
from agent.jobs.records import SCHEMA as RUNS_SCHEMA
from agent.store import Store

TOTALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS metric_totals (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    last_id INTEGER NOT NULL   -- the newest source row already counted
);
"""


@dataclass(frozen=True)
class JobLast:
    """A job's last finished run: its status and duration in seconds."""

    job: str
    status: str
    duration_s: float


def advance_totals(store: Store) -> dict[str, int]:
    """Advance and return the persistent counters ``{"cleanup_freed_bytes",
    "watchdog_restarts"}`` past the records not counted yet.  Blocking (SQLite).

    Cleanup runs are counted in id order up to the first one still running
    (dry runs add nothing); watchdog restarts are rows of ``container_restarts``
    with ``trigger = 'watchdog'``.
    """
    store.apply(TOTALS_SCHEMA + RUNS_SCHEMA + RESTARTS_SCHEMA)
    with store.tx() as db:
        totals = {name: _advance(db, name, sql) for name, sql in _TOTAL_SOURCES.items()}
    return totals


_TOTAL_SOURCES = {
    "cleanup_freed_bytes": "SELECT id, status, CASE WHEN dry_run THEN 0 ELSE freed_bytes END"
                           " FROM job_runs WHERE job = 'cleanup' AND id > ? ORDER BY id",
    "watchdog_restarts": "SELECT id, 'ok', 1 FROM container_restarts WHERE trigger ="
                         " 'watchdog' AND id > ? ORDER BY id",
}


def _advance(db: sqlite3.Connection, name: str, sql: str) -> int:
    row = db.execute("SELECT value, last_id FROM metric_totals WHERE name = ?",
                     (name,)).fetchone()
    value, last_id = (row[0], row[1]) if row else (0, 0)
    for rid, status, amount in db.execute(sql, (last_id,)).fetchall():
        if status == "running":
            break
        value, last_id = value + int(amount), rid
    db.execute("INSERT INTO metric_totals VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
               " value = excluded.value, last_id = excluded.last_id", (name, value, last_id))
    return int(value)


def job_lasts(store: Store) -> tuple[dict[tuple[str, str], float], tuple[JobLast, ...],
                                     int | None]:
    """From the run records, dry runs left out (a manual dry run must not flip a "last
    run ok" alert): ``{(job, mode): finished_at}`` of the last finished run per mode,
    each job's last finished run, and the freed bytes of the last cleanup that ran
    (not refused: ``skipped``) (None: none).  Blocking (SQLite)."""
    store.apply(RUNS_SCHEMA)
    at = {(r[0], r[1]): float(r[2]) for r in store.query(
        "SELECT job, mode, MAX(finished_at) FROM job_runs WHERE status != 'running' AND"
        " finished_at IS NOT NULL AND dry_run = 0 GROUP BY job, mode")}
    lasts = tuple(JobLast(r[0], r[1], round(float(r[2]), 3)) for r in store.query(
        "SELECT r.job, r.status, r.finished_at - r.started_at FROM job_runs r JOIN"
        " (SELECT MAX(id) AS id FROM job_runs WHERE status != 'running' AND finished_at IS"
        " NOT NULL AND dry_run = 0 GROUP BY job) m ON r.id = m.id ORDER BY r.job"))
    freed = store.query("SELECT freed_bytes FROM job_runs WHERE job = 'cleanup' AND"
                        " dry_run = 0 AND status NOT IN ('running', 'skipped')"
                        " ORDER BY id DESC LIMIT 1")
    return at, lasts, int(freed[0][0]) if freed else None
