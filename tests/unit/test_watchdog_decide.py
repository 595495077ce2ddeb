"""decide(): every rule of the watchdog and its boundaries (pure; no Docker)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from agent.config import WatchdogConfig
from agent.containers.model import Container, Healthcheck, HealthCheckResult
from agent.containers.watchdog import (
    GiveUp,
    History,
    Restart,
    Resume,
    Skip,
    Snapshot,
    decide,
    decide_one,
    retry_after_s,
    watchdog_status,
)

NOW = 1_800_000_000.0
CFG = WatchdogConfig(protected=("ollama",))
HC = Healthcheck(interval_s=10, timeout_s=5, retries=3, start_period_s=20)  # grace 50 s


def failing(n: int, *, end: float = NOW - 1, interval: float = 10) -> tuple[HealthCheckResult, ...]:
    return tuple(HealthCheckResult(end - (n - i) * interval - 0.1, end - (n - 1 - i) * interval,
                                   1, "down") for i in range(n))


def unhealthy(**kw: Any) -> Container:
    base = Container(name="web", id="a" * 64, image="nginx", state="running", health="unhealthy",
                     started_at=NOW - 3600, failing_streak=5, health_log=failing(5),
                     healthcheck=HC, restart_count=0, stop_timeout_s=10)
    return replace(base, **kw)


def one(c: Container, h: History | None = None, *, now: float = NOW, cfg: WatchdogConfig = CFG,
        hold: bool = False) -> Any:
    return decide_one(c, h or History(), now, cfg, hold_active=hold)


def test_running_unhealthy_with_streak_is_restarted() -> None:
    action = one(unhealthy())
    assert action == Restart("web", "a" * 64, 5, 10, "unhealthy, FailingStreak 5")


@pytest.mark.parametrize("state", ["restarting", "paused", "exited", "dead", "removing",
                                   "created"])
def test_not_running_is_never_touched(state: str) -> None:
    assert one(unhealthy(state=state)) is None


@pytest.mark.parametrize("health", ["healthy", "starting", "none"])
def test_not_unhealthy_is_never_touched(health: str) -> None:
    assert one(unhealthy(health=health)) is None


def test_opted_out_by_label() -> None:
    action = one(unhealthy(labels={"vm-agent.watchdog": "off"}))
    assert isinstance(action, Skip) and "opted out" in action.reason
    assert isinstance(one(unhealthy(labels={"vm-agent.watchdog": "on"})), Restart)


def test_protected_name() -> None:
    action = one(unhealthy(name="ollama"))
    assert isinstance(action, Skip) and "protected" in action.reason


def test_streak_boundary() -> None:
    short = one(unhealthy(failing_streak=2, health_log=failing(2)))
    assert isinstance(short, Skip) and short.reason == "FailingStreak 2 < 3"
    # next result lands one interval after the newest End (NOW - 1): 1 check away = 9 s
    assert short.recheck_after_s == pytest.approx(9.0)
    assert isinstance(one(unhealthy(failing_streak=3, health_log=failing(3))), Restart)


def test_newest_log_entries_must_agree() -> None:
    log = (*failing(4)[:2], replace(failing(1)[0], exit_code=0), *failing(2))
    action = one(unhealthy(failing_streak=3, health_log=log))
    assert isinstance(action, Skip) and "disagrees" in action.reason
    assert isinstance(one(unhealthy(health_log=())), Skip)


def test_failures_before_restart_is_configurable() -> None:
    cfg = replace(CFG, failures_before_restart=1)
    assert isinstance(one(unhealthy(failing_streak=1, health_log=failing(1)), cfg=cfg), Restart)


def test_grace_after_last_start_and_after_own_restart() -> None:
    just_started = one(unhealthy(started_at=NOW - 49))
    assert isinstance(just_started, Skip) and "grace" in just_started.reason
    assert just_started.recheck_after_s == pytest.approx(1.0)
    assert isinstance(one(unhealthy(started_at=NOW - 50)), Restart)
    restarted = History(restarts=(NOW - 30,))
    assert isinstance(one(unhealthy(), restarted), Skip)
    assert isinstance(one(unhealthy(), History(restarts=(NOW - 51,))), Restart)


def test_grace_uses_docker_defaults_when_unset() -> None:
    defaults = unhealthy(healthcheck=Healthcheck(), started_at=NOW - 89)  # 0 + 30 x 3
    assert isinstance(one(defaults), Skip)
    assert isinstance(one(replace(defaults, started_at=NOW - 90)), Restart)


def test_hold_skips_with_reason() -> None:
    action = one(unhealthy(), hold=True)
    assert isinstance(action, Skip) and action.reason == "hold active"


def test_budget_then_one_give_up_then_skips() -> None:
    two = History(restarts=(NOW - 3000, NOW - 2000))
    assert isinstance(one(unhealthy(), two), Restart)
    three = History(restarts=(NOW - 3000, NOW - 2000, NOW - 1000))
    give_up = one(unhealthy(restart_count=4), three)
    assert give_up == GiveUp("web", "a" * 64, 3, 3600.0, 4)
    tripped = replace(three, gave_up_at=NOW - 10, gave_up_restart_count=4)
    after = one(unhealthy(restart_count=4), tripped)
    assert isinstance(after, Skip) and "gave up" in after.reason


def test_budget_window_boundary() -> None:
    old = History(restarts=(NOW - 3600, NOW - 2000, NOW - 1000))  # the first is out
    assert isinstance(one(unhealthy(), old), Restart)
    assert retry_after_s(History(restarts=(NOW - 3599, NOW - 2000, NOW - 1000)), NOW,
                         CFG) == pytest.approx(1.0)
    assert retry_after_s(old, NOW, CFG) is None


def test_breaker_resets_when_healthy_again() -> None:
    tripped = History(restarts=(NOW - 100,), gave_up_at=NOW - 50, gave_up_restart_count=0)
    action = one(unhealthy(health="healthy"), tripped)
    assert action == Resume("web", "a" * 64, "healthy again")


def test_breaker_resets_after_operator_restart_not_after_policy_restart() -> None:
    tripped = History(restarts=(NOW - 100,), gave_up_at=NOW - 50, gave_up_restart_count=2)
    by_hand = unhealthy(started_at=NOW - 10, restart_count=2)
    assert one(by_hand, tripped) == Resume("web", "a" * 64, "restarted by an operator")
    by_policy = unhealthy(started_at=NOW - 10, restart_count=3)
    assert isinstance(one(by_policy, tripped), Skip)
    before = unhealthy(started_at=NOW - 60, restart_count=2)
    assert isinstance(one(before, tripped), Skip)


def test_decide_is_keyed_by_id_and_sorted_by_name() -> None:
    new = unhealthy(id="b" * 64)  # recreated: same name, new id
    other = unhealthy(name="api", id="c" * 64)
    history = {"a" * 64: History(restarts=(NOW - 30, NOW - 20, NOW - 10))}
    actions = decide(Snapshot([new, other]), history, NOW, CFG)
    assert [type(a) for a in actions] == [Restart, Restart]
    assert [a.container for a in actions] == ["api", "web"]


def test_decide_passes_the_hold() -> None:
    actions = decide(Snapshot([unhealthy()], hold_active=True), {}, NOW, CFG)
    assert [a.reason for a in actions if isinstance(a, Skip)] == ["hold active"]


def test_watchdog_status() -> None:
    h = History(restarts=(NOW - 3000, NOW - 20, NOW - 10), gave_up_at=NOW - 5,
                gave_up_restart_count=0)
    status = watchdog_status(unhealthy(), h, NOW, CFG)
    assert status["restarts_in_window"] == 3 and status["gave_up"] is True
    assert status["retry_after_s"] == pytest.approx(600.0)
    assert status["enabled"] is True
    assert watchdog_status(unhealthy(name="ollama"), History(), NOW, CFG)["enabled"] is False
