"""Pure logic broken the way real life does: a clock stepping back under a cooldown,
timestamps at the edge of what datetime can hold."""

from __future__ import annotations

from agent.config import AlertsConfig
from agent.notify.rules import AlertState, StoredEvent, decide, in_cooldown
from agent.ollama import utc_rfc3339

CFG = AlertsConfig(cooldown_s=600.0)
T0 = 1_800_000_000.0


def test_a_clock_stepped_back_does_not_stretch_the_cooldown() -> None:
    alerted = AlertState("OK", "OK", T0, 0, 1, "web ok again")  # last alert at T0, recovered
    back = T0 - 86_400  # NTP stepped the clock back a day
    assert not in_cooldown(alerted, back, CFG.cooldown_s)
    d = decide(StoredEvent(2, back, "io.write_rate", "web", "WARN", "web WARN"), alerted, CFG)
    assert d.reason == "raised" and d.text is not None
    assert in_cooldown(d.state, back + 1, CFG.cooldown_s)  # the cooldown restarts from now
    assert in_cooldown(alerted, T0 + 599, CFG.cooldown_s)
    assert not in_cooldown(alerted, T0 + 600, CFG.cooldown_s)


def test_timestamps_past_datetimes_range_are_none_not_a_crash() -> None:
    assert utc_rfc3339("9999-12-31T23:59:59-07:00") is None
    assert utc_rfc3339("0001-01-01T00:00:00+07:00") is None
    assert utc_rfc3339("2318-04-23T11:21:45.123-07:00") == "2318-04-23T18:21:45Z"
