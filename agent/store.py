"""The state store: one SQLite database (WAL) under ``state_dir``.

Each domain owns its tables and declares them as a named schema
(``CREATE TABLE IF NOT EXISTS ...``) applied at open; this module only opens
the database the same way everywhere: WAL journal (readers never block the
writer, a crash never leaves half a transaction), ``synchronous=NORMAL``
(durable across process crashes; the last transactions may be lost on power
loss, which the WAL recovers consistently), a busy timeout so the daemon and
a CLI process can share it, and foreign keys on.

SQLite is blocking: call it through ``asyncio.to_thread`` from the event
loop (every statement here is small: a few rows).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

DB_NAME = "vm-agent.db"
BUSY_TIMEOUT_MS = 5000


class Store:
    """A thread-safe handle on ``<state_dir>/vm-agent.db``.

    ``schemas`` are SQL scripts applied once at open (each must be
    idempotent).  Use :meth:`tx` for a transaction; it commits on success
    and rolls back on any exception.
    """

    def __init__(self, state_dir: str | Path, schemas: Sequence[str] = ()) -> None:
        self.path = Path(state_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                       f"busy_timeout={BUSY_TIMEOUT_MS}"):
            self._db.execute(f"PRAGMA {pragma}")
        for script in schemas:
            self.apply(script)

    def apply(self, script: str) -> None:
        """Run an idempotent schema script (``CREATE ... IF NOT EXISTS``)."""
        with self._lock:
            self._db.executescript(script)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """``with store.tx() as db: db.execute(...)``: one ``BEGIN IMMEDIATE`` transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        """All rows of one read-only statement."""
        with self._lock:
            return list(self._db.execute(sql, params))

    def close(self) -> None:
        with self._lock:
            self._db.close()
