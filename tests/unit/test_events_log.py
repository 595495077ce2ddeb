"""DockerEvents logs a lost stream once per reason, not once per reconnect attempt."""

from __future__ import annotations

import logging

import pytest

from agent.containers import events
from agent.containers.events import DockerEvents


def _follower() -> DockerEvents:
    return DockerEvents("unix:///nonexistent.sock", on_event=lambda e: None,
                        on_connect=lambda: None, on_disconnect=lambda: None)


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "docker events" in r.getMessage()]


def test_the_same_reason_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vm-agent")
    follower = _follower()
    for _ in range(50):  # Docker stopped: a retry every backoff_max_s
        follower.log_retry("socket not found", 10.0)
    assert len(_lines(caplog)) == 1
    follower.log_retry("connection refused", 10.0)  # a new reason is news
    assert len(_lines(caplog)) == 2 and "connection refused" in _lines(caplog)[1]


def test_the_reason_is_logged_again_after_the_interval(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="vm-agent")
    monkeypatch.setattr(events, "REPEAT_LOG_S", 0)
    follower = _follower()
    follower.log_retry("socket not found", 10.0)
    follower.log_retry("socket not found", 10.0)
    assert len(_lines(caplog)) == 2
