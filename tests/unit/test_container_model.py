"""The container model from inspect answers, and memory from a temp cgroup tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.containers.inventory import listed_health
from agent.containers.memory import memory_bytes
from agent.containers.model import (
    Healthcheck,
    from_inspect,
    healthcheck_of,
    newest_checks,
    parse_time,
    rfc3339,
    to_wire,
)

CID = "4" * 64
NS = 1_000_000_000


def inspect(**state: Any) -> dict[str, Any]:
    return {
        "Id": CID, "Name": "/web", "RestartCount": 2, "Image": "sha256:abc",
        "State": {"Status": "running", "Pid": 42, "OOMKilled": False,
                  "StartedAt": "2026-11-29T20:00:00.123456789Z", **state},
        "Config": {"Image": "nginx:1.25", "Labels": {"com.docker.compose.project": "shop"},
                   "Healthcheck": {"Test": ["CMD", "true"], "Interval": 2 * NS,
                                   "Retries": 2}},
        "HostConfig": {"Memory": 256_000_000},
    }


def log_entry(second: int, code: int) -> dict[str, Any]:
    return {"Start": f"2026-11-29T20:00:{second:02d}.5Z",
            "End": f"2026-11-29T20:00:{second:02d}.987654321+00:00",
            "ExitCode": code, "Output": f"check {second}"}


def test_parse_time_handles_nanoseconds_offsets_and_never() -> None:
    assert parse_time("2026-11-29T20:00:00.123456789Z") == pytest.approx(1795982400.123456)
    assert parse_time("2026-11-29T21:00:00+01:00") == pytest.approx(1795982400.0)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time(None) is None and parse_time("garbage") is None
    assert rfc3339(1795982400.9) == "2026-11-29T20:00:00Z"


def test_healthcheck_defaults_are_dockers() -> None:
    assert healthcheck_of({}) is None
    assert healthcheck_of({"Healthcheck": {"Test": ["NONE"]}}) is None
    hc = healthcheck_of({"Healthcheck": {"Test": ["CMD", "true"]}})
    assert hc == Healthcheck(30.0, 30.0, 3, 0.0)
    assert hc is not None and hc.grace_s == 90.0


def test_from_inspect_without_health() -> None:
    c = from_inspect({**inspect(), "Config": {"Image": "x"}, "HostConfig": {}})
    assert (c.health, c.failing_streak, c.health_log, c.healthcheck) == ("none", 0, (), None)
    assert c.health_since() == (None, False)
    assert (c.stack, c.stop_timeout_s, c.memory_limit_bytes) == (None, 10, 0)


def test_from_inspect_unhealthy_with_log() -> None:
    health = {"Status": "unhealthy", "FailingStreak": 3,
              "Log": [log_entry(1, 0), log_entry(3, 1), log_entry(5, 1), log_entry(7, 1)]}
    c = from_inspect(inspect(Health=health), memory_bytes=1234, image_created_at=1.0)
    assert (c.name, c.stack, c.image, c.state) == ("web", "shop", "nginx:1.25", "running")
    assert (c.failing_streak, c.restart_count, c.memory_limit_bytes) == (3, 2, 256_000_000)
    # retries 2: the second failure (second 5) flipped it to unhealthy
    since, estimated = c.health_since()
    assert rfc3339(since) == "2026-11-29T20:00:05Z" and estimated is False
    assert [r["output"] for r in newest_checks(c, 3)] == ["check 7", "check 5", "check 3"]
    row = to_wire(c, c.started_at + 60 if c.started_at else 0, {"enabled": True})
    assert row["uptime_s"] == pytest.approx(60.0) and row["memory_bytes"] == 1234
    assert row["image_created_at"] == "1970-01-01T00:00:01Z"


def test_unhealthy_since_is_estimated_beyond_the_log() -> None:
    health = {"Status": "unhealthy", "FailingStreak": 50,
              "Log": [log_entry(s, 1) for s in (1, 3, 5, 7, 9)]}
    c = from_inspect(inspect(Health=health))
    since, estimated = c.health_since()
    assert estimated is True
    assert since == pytest.approx(parse_time(log_entry(9, 1)["End"]) - 48 * 2)  # type: ignore


def test_healthy_since_first_success_after_failure() -> None:
    health = {"Status": "healthy", "FailingStreak": 0,
              "Log": [log_entry(1, 1), log_entry(3, 0), log_entry(5, 0)]}
    since, _ = from_inspect(inspect(Health=health)).health_since()
    assert rfc3339(since) == "2026-11-29T20:00:03Z"


def test_opt_out_label() -> None:
    raw = inspect()
    raw["Config"]["Labels"]["vm-agent.watchdog"] = "OFF"
    assert from_inspect(raw).opted_out is True
    assert from_inspect(inspect()).opted_out is False


def _tree(tmp_path: Path, proc_lines: str, files: dict[str, str]) -> tuple[str, str]:
    (tmp_path / "proc" / "42").mkdir(parents=True)
    (tmp_path / "proc" / "42" / "cgroup").write_text(proc_lines)
    for rel, value in files.items():
        path = tmp_path / "cg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)
    return str(tmp_path / "cg"), str(tmp_path / "proc")


def test_memory_v1_from_the_process_cgroup(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, f"4:memory:/custom/{CID}\n0::/custom/{CID}\n",
                       {f"memory/custom/{CID}/memory.usage_in_bytes": "123456\n"})
    assert memory_bytes(CID, 42, cgroup_root=root, proc_root=proc) == 123456


def test_memory_v2_systemd_scope(tmp_path: Path) -> None:
    scope = f"system.slice/docker-{CID}.scope"
    root, proc = _tree(tmp_path, f"0::/{scope}\n", {f"{scope}/memory.current": "999\n"})
    assert memory_bytes(CID, 42, cgroup_root=root, proc_root=proc) == 999


def test_memory_falls_back_to_known_layouts_and_none(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, "", {f"docker/{CID}/memory.current": "77"})
    assert memory_bytes(CID, 43, cgroup_root=root, proc_root=proc) == 77  # no /proc/43
    assert memory_bytes("f" * 64, 43, cgroup_root=root, proc_root=proc) is None
    assert memory_bytes(CID, 0, cgroup_root=root, proc_root=proc) is None


@pytest.mark.parametrize("status,health", [
    ("Up 5 minutes (healthy)", "healthy"), ("Up 2 hours (unhealthy)", "unhealthy"),
    ("Up 3 seconds (health: starting)", "starting"), ("Up 3 days", "none"),
    ("Exited (0) 5 minutes ago", "none"),
])
def test_listed_health_from_status_text(status: str, health: str) -> None:
    assert listed_health({"Status": status}) == health
