"""alert_events never shrinks; the newest event of one (kind, subject), asked by the
backup repair once per repo and kind every run, is found by index, not a table scan.
An existing state store gets the index when the agent opens it."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

from agent.audit import Auditor
from agent.journal import JournalWriter
from agent.notify.events import AlertEvent, AlertLog
from agent.store import Store

NEWEST = ("SELECT level FROM alert_events WHERE kind = ? AND subject = ? "
          "ORDER BY id DESC LIMIT 1")


def test_the_newest_event_of_a_subject_is_found_by_index(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.tx() as db:  # a store from before the index: the table alone
        db.execute("CREATE TABLE alert_events (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL "
                   "NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL, level TEXT NOT NULL, "
                   "text TEXT NOT NULL)")
    log = AlertLog(store, Auditor(JournalWriter(socket_path=str(tmp_path / "no.sock"),
                                                stream=io.StringIO())))
    for n in range(3):
        log.emit(AlertEvent("backup.failed", "/srv/a", "CRIT" if n < 2 else "OK", "x"))
    (row,) = store.query(NEWEST, ("backup.failed", "/srv/a"))
    assert row["level"] == "OK"
    with sqlite3.connect(tmp_path / "vm-agent.db") as db:
        plan = " ".join(str(r[3]) for r in db.execute("EXPLAIN QUERY PLAN " + NEWEST,
                                                      ("k", "s")))
    assert "USING INDEX alert_events_kind_subject" in plan, plan
