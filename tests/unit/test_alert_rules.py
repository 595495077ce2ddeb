"""Alert rules: transitions, cooldown, one-off kinds, recoveries, quiet start-up, restarts.

The pure rules (agent.notify.rules.decide) and the same rules through the
delivery loop's store side (agent.notify.delivery.Notifier with a real
SQLite store, Telegram not configured so messages stay in the outbox).
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

from agent.audit import Auditor
from agent.config import AlertsConfig, Config
from agent.journal import JournalWriter
from agent.notify.delivery import Notifier, backoff_s
from agent.notify.events import AlertEvent, AlertLevel, AlertLog
from agent.notify.outbox import Outbox
from agent.notify.rules import AlertState, StoredEvent, decide
from agent.store import Store

CFG = AlertsConfig(cooldown_s=600.0)
T0 = 1_800_000_000.0


def ev(level: AlertLevel, at: float, *, kind: str = "io.write_rate", subject: str = "web",
       eid: int = 1) -> StoredEvent:
    return StoredEvent(eid, at, kind, subject, level, f"{subject} is {level}")


def run(levels: list[tuple[AlertLevel, float]], *, kind: str = "io.write_rate",
        cfg: AlertsConfig = CFG) -> list[str]:
    """The reasons decide() gives for a sequence of (level, at) events of one subject."""
    state: AlertState | None = None
    reasons: list[str] = []
    for i, (level, at) in enumerate(levels, 1):
        d = decide(ev(level, at, kind=kind, eid=i), state, cfg)
        assert (d.text is not None) == (d.reason not in ("steady", "cooldown", "baseline"))
        reasons.append(d.reason)
        state = d.state
    return reasons


def test_transitions_notify_and_repeats_do_not() -> None:
    assert run([("OK", T0), ("WARN", T0 + 1), ("WARN", T0 + 2), ("WARN", T0 + 900)]) == [
        "steady", "raised", "steady", "steady"]


def test_escalation_and_recovery_are_never_held_by_the_cooldown() -> None:
    assert run([("WARN", T0), ("CRIT", T0 + 1), ("OK", T0 + 2)]) == [
        "raised", "escalated", "recovered"]


def test_raise_within_cooldown_is_held_then_allowed_after_it() -> None:
    assert run([("WARN", T0), ("OK", T0 + 10), ("WARN", T0 + 20), ("OK", T0 + 30),
                ("WARN", T0 + 700)]) == ["raised", "recovered", "cooldown", "steady", "raised"]


def test_first_event_ok_is_not_a_recovery() -> None:
    assert run([("OK", T0)]) == ["steady"]


def test_one_off_kind_notifies_every_time_outside_the_cooldown() -> None:
    reasons = run([("WARN", T0), ("WARN", T0 + 1), ("WARN", T0 + 2), ("WARN", T0 + 601)],
                  kind="container.oom")
    assert reasons == ["one_off", "cooldown", "cooldown", "one_off"]


def test_held_count_is_said_in_the_next_one_off_message() -> None:
    state = None
    for i, at in enumerate((T0, T0 + 1, T0 + 2, T0 + 700), 1):
        d = decide(ev("WARN", at, kind="job.failed", eid=i), state, CFG)
        state = d.state
    assert d.text is not None and "2 more held back" in d.text


def test_zero_cooldown_lets_every_change_through() -> None:
    cfg = replace(CFG, cooldown_s=0.0)
    assert run([("WARN", T0), ("OK", T0), ("WARN", T0)], cfg=cfg) == [
        "raised", "recovered", "raised"]


def test_message_text_names_level_kind_subject_and_text() -> None:
    d = decide(ev("CRIT", T0, subject="<web&api>"), None, CFG)
    assert d.text is not None
    first, second = d.text.split("\n")
    assert first.endswith("CRIT: io.write_rate <web&api>") and second == "<web&api> is CRIT"


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(n, 10, 100) for n in range(6)] == [10, 20, 40, 80, 100, 100]
    assert backoff_s(10_000, 10, 100) == 100


# --- through the store: quiet start-up, restarts, held changes ---------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def setup(tmp: Path, clock: Clock) -> tuple[Store, AlertLog, Notifier]:
    store = Store(tmp / "state")
    log = AlertLog(store, Auditor(JournalWriter(socket_path=str(tmp / "no.sock"),
                                                stream=io.StringIO())))
    cfg = Config(alerts=AlertsConfig(cooldown_s=600.0, startup_grace_s=300.0))
    return store, log, Notifier(cfg, store, credentials_dir=str(tmp / "none"), clock=clock)


def queued(store: Store) -> list[str]:
    return [m.text.split("\n")[0] for m in Outbox(store).pending(now=float("inf"))]


def test_first_start_takes_existing_events_as_baseline(tmp_path: Path) -> None:
    clock = Clock(T0)
    store, log, notifier = setup(tmp_path, clock)
    log.emit(AlertEvent("io.write_rate", "web", "WARN", "old"), at=T0 - 5)
    log.emit(AlertEvent("container.oom", "db", "WARN", "old oom"), at=T0 - 5)
    assert notifier.baseline() == 2 and queued(store) == []
    log.emit(AlertEvent("io.write_rate", "web", "WARN", "still"), at=T0 + 1)
    log.emit(AlertEvent("io.write_rate", "web", "OK", "fine"), at=T0 + 2)
    notifier.process_events()
    assert [q.split(": ")[0][2:] for q in queued(store)] == ["OK recovered"]


def test_restart_absorbs_old_unprocessed_events_but_not_recent_ones(tmp_path: Path) -> None:
    clock = Clock(T0)
    store, log, notifier = setup(tmp_path, clock)
    notifier.baseline()
    log.emit(AlertEvent("io.write_rate", "old", "WARN", "old"), at=T0 - 400)
    log.emit(AlertEvent("io.write_rate", "new", "WARN", "new"), at=T0 - 100)
    restarted = Notifier(notifier.cfg, store, credentials_dir=str(tmp_path / "none"),
                         clock=clock)
    assert restarted.baseline() == 2
    restarted.process_events()
    assert queued(store) == ["\U0001F7E0 WARN: io.write_rate new"]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock(T0)
    store, log, notifier = setup(tmp_path, clock)
    notifier.baseline()
    log.emit(AlertEvent("io.write_rate", "web", "WARN", "w"), at=T0)
    notifier.process_events()
    assert len(queued(store)) == 1
    restarted = Notifier(notifier.cfg, store, credentials_dir=str(tmp_path / "none"),
                         clock=clock)
    restarted.baseline()
    log.emit(AlertEvent("io.write_rate", "web", "WARN", "w again"), at=T0 + 900)
    restarted.process_events()
    assert len(queued(store)) == 1  # WARN -> WARN across the restart: nothing new


def test_held_change_is_sent_when_the_cooldown_ends(tmp_path: Path) -> None:
    clock = Clock(T0)
    store, log, notifier = setup(tmp_path, clock)
    notifier.baseline()
    log.emit(AlertEvent("io.write_rate", "web", "WARN", "w"), at=T0)
    log.emit(AlertEvent("io.write_rate", "web", "OK", "ok"), at=T0 + 1)
    log.emit(AlertEvent("io.write_rate", "web", "WARN", "w2"), at=T0 + 2)
    notifier.process_events()
    assert notifier.release_held() == 0 and len(queued(store)) == 2
    clock.now = T0 + 601
    assert notifier.release_held() == 1
    assert notifier.release_held() == 0
    assert queued(store)[-1] == "\U0001F7E0 WARN: io.write_rate web"


def test_reprocessing_after_a_crash_never_doubles(tmp_path: Path) -> None:
    clock = Clock(T0)
    store, log, notifier = setup(tmp_path, clock)
    notifier.baseline()
    log.emit(AlertEvent("job.failed", "backup", "WARN", "failed"), at=T0)
    notifier.process_events()
    with store.tx() as db:  # as if the cursor update had been lost in a crash
        db.execute("UPDATE alert_cursor SET last_id = 0")
        db.execute("DELETE FROM alert_state")
    notifier.process_events()
    assert len(queued(store)) == 1


def test_outbox_dedupe_and_failure_bookkeeping(tmp_path: Path) -> None:
    outbox = Outbox(Store(tmp_path))
    first = outbox.enqueue("digest", kind="digest", dedupe_key="digest:2026-W48", at=T0)
    assert first is not None
    assert outbox.enqueue("digest", kind="digest", dedupe_key="digest:2026-W48") is None
    outbox.mark_failed(first, "telegram error 502", T0 + 60)
    assert outbox.pending(now=T0 + 59) == []
    [msg] = outbox.pending(now=T0 + 60)
    assert (msg.attempts, msg.last_error) == (1, "telegram error 502")
    outbox.mark_sent(first)
    assert outbox.pending(now=T0 + 1e6) == [] and outbox.counts() == {"pending": 0, "sent": 1,
                                                                        "dead": 0}


def test_a_dead_message_is_parked_with_its_error_and_never_due(tmp_path: Path) -> None:
    outbox = Outbox(Store(tmp_path))
    poison = outbox.enqueue("", kind="alert", at=T0)
    later = outbox.enqueue("next", kind="alert", at=T0 + 1)
    assert poison is not None and later is not None
    outbox.mark_dead(poison, "telegram error 400: Bad Request: message text is empty")
    assert [m.id for m in outbox.pending(now=T0 + 1e6)] == [later]
    [dead] = outbox.dead()
    assert (dead.id, dead.attempts, dead.last_error) == (
        poison, 1, "telegram error 400: Bad Request: message text is empty")
    outbox.mark_sent(poison)  # a parked message stays parked
    assert outbox.counts() == {"pending": 1, "sent": 0, "dead": 1}


OLD_OUTBOX = """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created_at REAL NOT NULL, kind TEXT NOT NULL,
    dedupe_key TEXT UNIQUE, text TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent')),
    attempts INTEGER NOT NULL DEFAULT 0, parts_sent INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, last_error TEXT, sent_at REAL);
CREATE INDEX outbox_pending ON outbox (status, next_at);
INSERT INTO outbox (created_at, kind, dedupe_key, text, next_at)
    VALUES (1800000000, 'digest', 'digest:2026-W48', 'old', 1800000000);
"""


def test_an_outbox_from_before_dead_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.apply(OLD_OUTBOX)
    outbox = Outbox(store)
    [msg] = outbox.pending(now=T0)
    outbox.mark_dead(msg.id, "telegram error 403: Forbidden: bot was blocked by the user")
    assert outbox.counts() == {"pending": 0, "sent": 0, "dead": 1}
    assert outbox.enqueue("x", kind="digest", dedupe_key="digest:2026-W48") is None
    Outbox(store)  # a second open leaves it alone
    assert [m.text for m in outbox.dead()] == ["old"]
