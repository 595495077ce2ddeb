"""Breaking decide() and the stop detection: clock steps back, stops and restarts in flight
(pure; no Docker)."""

from __future__ import annotations

import signal
from dataclasses import replace

from agent.containers.model import signal_number
from agent.containers.stops import StopLog, stopping_kill
from agent.containers.watchdog import History, Restart, Skip, Snapshot, decide, retry_after_s
from tests.unit.test_watchdog_decide import CFG, NOW, one, unhealthy


def test_restarts_dated_after_a_clock_step_back_still_count_against_the_budget() -> None:
    cfg = replace(CFG, max_restarts=3, window_s=3600)
    h = History(restarts=(NOW + 600, NOW + 700, NOW + 800))  # clock went back ~15 min
    wait = retry_after_s(h, NOW, cfg)
    assert wait is not None and wait > 3600


def test_a_clock_step_back_of_a_day_does_not_stop_the_watchdog_for_a_day() -> None:
    c = unhealthy(started_at=NOW + 86400)  # StartedAt written before the step back
    h = History(restarts=(NOW + 86000,))
    action = one(c, h)
    assert isinstance(action, Restart), action
    # a step back of less than the grace period still waits (at most twice the grace)
    near = one(unhealthy(started_at=NOW + 10))
    assert isinstance(near, Skip) and near.reason.startswith("in grace period")
    assert near.recheck_after_s is not None and near.recheck_after_s <= 2 * 50


def test_a_restart_in_flight_or_a_stop_in_progress_is_skipped() -> None:
    c = unhealthy()
    [in_flight] = decide(Snapshot([c], restarting=frozenset({c.id})), {}, NOW, CFG)
    [stopping] = decide(Snapshot([c], being_stopped=frozenset({c.id})), {}, NOW, CFG)
    assert isinstance(in_flight, Skip) and in_flight.reason == "restart in progress"
    assert isinstance(stopping, Skip) and stopping.reason.startswith("being stopped")
    assert isinstance(decide(Snapshot([c]), {}, NOW, CFG)[0], Restart)


def test_only_a_stopping_signal_after_the_last_start_counts() -> None:
    c = unhealthy(started_at=NOW - 10, stop_signal=int(signal.SIGWINCH))
    assert stopping_kill(c, [(NOW - 5, 15)])
    assert stopping_kill(c, [(NOW - 5, int(signal.SIGWINCH))])  # httpd's STOPSIGNAL
    assert not stopping_kill(c, [(NOW - 20, 15)])  # before the start: the agent's own restart
    assert not stopping_kill(c, [(NOW - 5, int(signal.SIGHUP))])  # a reload


def test_stop_log_keeps_kills_per_id_and_forgets_destroyed_ones() -> None:
    log = StopLog()
    log.note({"Action": "kill", "timeNano": int(NOW * 1e9),
              "Actor": {"ID": "abc", "Attributes": {"signal": "15", "name": "web"}}})
    log.note({"Action": "start", "Actor": {"ID": "abc"}})
    assert log.kills("abc") == [(NOW, 15)]
    log.note({"Action": "destroy", "Actor": {"ID": "abc"}})
    assert log.kills("abc") == []


def test_stop_signal_names() -> None:
    assert [signal_number(n) for n in (None, "", "SIGTERM", "TERM", "9", "sigquit",
                                       "SIGRTMIN+3", "BOGUS")] == [
        15, 15, 15, 15, 9, 3, int(signal.SIGRTMIN) + 3, 15]
