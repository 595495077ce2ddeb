"""Run records in the state store (PROTOCOL.md "Run record").

A run is inserted as ``running`` *before* any work starts, each step is
appended (its own transaction) as it finishes, and the run is finished at
the end; so a crash at any point leaves a consistent, readable record that
:func:`agent.jobs.runner.JobRunner.recover_stale` later marks
``failed``/``interrupted``.  Times are stored as Unix seconds and shown as
RFC 3339 UTC; sizes in bytes; disk usage as JSON lists of
``{mount, total_bytes, used_bytes, free_bytes, used_percent}``.

Blocking (SQLite): call from the event loop through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from agent.host.model import DiskSample
from agent.jobs.base import StepResult
from agent.jobs.lock import JobLock, run_is_stale
from agent.store import Store

log = logging.getLogger("vm-agent")

SCHEMA = """
CREATE TABLE IF NOT EXISTS job_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    mode TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    trigger TEXT NOT NULL CHECK (trigger IN ('timer', 'api', 'cli')),
    peer TEXT,
    pid INTEGER,                -- the process that ran it
    started_at REAL NOT NULL,   -- Unix seconds
    finished_at REAL,
    status TEXT NOT NULL
        CHECK (status IN ('running', 'ok', 'partial', 'failed', 'skipped')),
    reason TEXT,
    disk_before TEXT,           -- JSON list
    disk_after TEXT,
    freed_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS job_runs_job ON job_runs (job, id);
CREATE INDEX IF NOT EXISTS job_runs_status ON job_runs (status);
CREATE TABLE IF NOT EXISTS job_run_steps (
    run_id INTEGER NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'skipped', 'planned')),
    freed_bytes INTEGER NOT NULL DEFAULT 0,
    duration_s REAL NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '',
    error TEXT,
    PRIMARY KEY (run_id, seq)
);
"""


def rfc3339(unix_s: float | None) -> str | None:
    """Unix seconds -> ``2026-11-29T03:30:00Z`` (UTC, whole seconds); None stays None."""
    if unix_s is None:
        return None
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def disks_json(disks: Sequence[DiskSample] | None) -> str | None:
    """Disk samples as the JSON stored in ``disk_before``/``disk_after``."""
    return None if disks is None else json.dumps([asdict(d) for d in disks])


class RunRecords:
    """The run history of every job, on a :class:`agent.store.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.apply(SCHEMA)

    def start(self, *, job: str, mode: str, dry_run: bool, trigger: str, peer: str | None,
              pid: int, status: str = "running", reason: str | None = None,
              now: float | None = None) -> int:
        """Insert a run (``running`` unless told otherwise); returns its id."""
        at = time.time() if now is None else now
        finished = None if status == "running" else at
        with self.store.tx() as db:
            cur = db.execute(
                "INSERT INTO job_runs (job, mode, dry_run, trigger, peer, pid, started_at,"
                " finished_at, status, reason) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (job, mode, int(dry_run), trigger, peer, pid, at, finished, status, reason))
        return int(cur.lastrowid or 0)

    def set_disk_before(self, run_id: int, disks: Sequence[DiskSample]) -> None:
        """Record usage of the configured mounts before the first step."""
        with self.store.tx() as db:
            db.execute("UPDATE job_runs SET disk_before = ? WHERE id = ?",
                       (disks_json(disks), run_id))

    def add_step(self, run_id: int, result: StepResult, seq: int | None = None) -> None:
        """Append one finished step (its own transaction) as step ``seq`` (0-based; default:
        after the last one recorded).  A step already recorded at ``seq`` is left alone."""
        with self.store.tx() as db:
            self._insert_step(db, run_id, result, seq)

    @staticmethod
    def _insert_step(db: sqlite3.Connection, run_id: int, result: StepResult,
                     seq: int | None) -> None:
        if seq is None:
            seq = db.execute("SELECT COUNT(*) FROM job_run_steps WHERE run_id = ?",
                             (run_id,)).fetchone()[0]
        db.execute("INSERT OR IGNORE INTO job_run_steps VALUES (?,?,?,?,?,?,?,?)",
                   (run_id, seq, result.name, result.status, result.freed_bytes,
                    result.duration_s, result.detail, result.error))

    def finish(self, run_id: int, *, status: str, reason: str | None,
               disk_after: Sequence[DiskSample] | None, now: float | None = None,
               steps: Sequence[StepResult] = ()) -> None:
        """Close a *running* run: status, reason, disk after, freed = sum of its steps'
        freed bytes.  A run already finished is left alone (first finisher wins).

        ``steps`` are the run's results in order: any that :meth:`add_step` could not write
        (the store was locked or full then) are written now, in the same transaction.
        ``finished_at`` is never before ``started_at`` (a clock stepped back mid-run gives
        a duration of 0, not a negative one).
        """
        at = time.time() if now is None else now
        with self.store.tx() as db:
            if db.execute("SELECT 1 FROM job_runs WHERE id = ? AND status = 'running'",
                          (run_id,)).fetchone() is None:
                return
            for seq, result in enumerate(steps):
                self._insert_step(db, run_id, result, seq)
            db.execute(
                "UPDATE job_runs SET status = ?, reason = ?, disk_after = ?,"
                " finished_at = MAX(?, started_at),"
                " freed_bytes = (SELECT COALESCE(SUM(freed_bytes), 0) FROM job_run_steps"
                " WHERE run_id = ?) WHERE id = ? AND status = 'running'",
                (status, reason, disks_json(disk_after), at, run_id, run_id))

    def get(self, run_id: int) -> dict[str, Any] | None:
        """One run record (wire shape) or None."""
        rows = self.store.query("SELECT * FROM job_runs WHERE id = ?", (run_id,))
        return self._wire(rows[0]) if rows else None

    def recent(self, job: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` records of ``job``, newest first."""
        rows = self.store.query("SELECT * FROM job_runs WHERE job = ? ORDER BY id DESC LIMIT ?",
                                (job, limit))
        return [self._wire(r) for r in rows]

    def last(self, job: str) -> dict[str, Any] | None:
        """The newest record of ``job`` (any status), or None."""
        found = self.recent(job, 1)
        return found[0] if found else None

    def running(self, job: str | None = None) -> list[sqlite3.Row]:
        """Raw rows (``id``, ``job``, ``pid``...) still marked ``running``, oldest first."""
        sql = "SELECT * FROM job_runs WHERE status = 'running'"
        args: tuple[object, ...] = ()
        if job is not None:
            sql, args = sql + " AND job = ?", (job,)
        return self.store.query(sql + " ORDER BY id", args)

    def mark_stale(self, run_dir: str | os.PathLike[str], job: str | None = None, *,
                   held: JobLock | None, reason: str) -> list[tuple[int, str]]:
        """Finish as ``failed``/``reason`` every ``running`` record (of ``job``, or all) whose
        run is gone (:func:`agent.jobs.lock.run_is_stale`); returns ``(run id, job)`` pairs.
        A record whose lock path cannot be opened is logged and left running."""
        stale = []
        for row in self.running(job):
            run_id, name = int(row["id"]), str(row["job"])
            try:
                gone = run_is_stale(run_dir, name, run_id, held=held)
            except OSError as exc:
                log.warning("run %d of job %s: lock unusable, left running: %s", run_id,
                            name, exc)
                continue
            if gone:
                self.finish(run_id, status="failed", reason=reason, disk_after=None)
                stale.append((run_id, name))
        return stale

    def prune(self, job: str, *, keep_days: float, keep_runs: int,
              now: float | None = None) -> int:
        """Delete finished records of ``job`` older than ``keep_days`` or beyond the newest
        ``keep_runs``; running records are never pruned.  Returns how many were deleted."""
        cutoff = (time.time() if now is None else now) - keep_days * 86400
        with self.store.tx() as db:
            cur = db.execute(
                "DELETE FROM job_runs WHERE job = ? AND status != 'running' AND (started_at < ?"
                " OR id NOT IN (SELECT id FROM job_runs WHERE job = ? ORDER BY id DESC"
                " LIMIT ?))", (job, cutoff, job, keep_runs))
        return cur.rowcount

    def _steps(self, run_id: int) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT * FROM job_run_steps WHERE run_id = ? ORDER BY seq",
                                (run_id,))
        return [StepResult.from_wire(dict(r)).to_wire() for r in rows]

    def _wire(self, row: sqlite3.Row) -> dict[str, Any]:
        finished = row["finished_at"]
        steps = self._steps(row["id"])
        freed = row["freed_bytes"] if finished is not None else sum(
            s["freed_bytes"] for s in steps)  # a running record: freed so far
        return {
            "id": row["id"], "job": row["job"], "mode": row["mode"],
            "dry_run": bool(row["dry_run"]), "trigger": row["trigger"], "peer": row["peer"],
            "started_at": rfc3339(row["started_at"]), "finished_at": rfc3339(finished),
            "duration_s": None if finished is None else round(finished - row["started_at"], 3),
            "status": row["status"], "reason": row["reason"],
            "disk_before": _loads(row["disk_before"]), "disk_after": _loads(row["disk_after"]),
            "freed_bytes": freed, "steps": steps,
        }


def _loads(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)
