"""The job routes over the real socket: run, list jobs, list runs, one run; errors and roles."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.api.services import Services
from tests.protocol.conftest import (
    VIEWER_UID,
    Agent,
    request,
    request_as,
    require_root,
    start_agent,
)

RUN_KEYS = {"id", "job", "mode", "dry_run", "trigger", "peer", "started_at", "finished_at",
            "status", "reason", "disk_before", "disk_after", "freed_bytes", "steps",
            "duration_s"}


@pytest.fixture
async def api(short_tmp: Path) -> AsyncIterator[tuple[Agent, Services, Path]]:
    agent, runner, stopper = await start_agent(short_tmp)
    services: Services = runner.state.services
    schedule = replace(services.config.jobs.schedule,
                       legacy_crontabs=(str(short_tmp / "crontab"),))
    services.config = replace(services.config,
                              jobs=replace(services.config.jobs, schedule=schedule))
    files = short_tmp / "selftest"  # the selftest job deletes the files in <run_dir>/selftest
    files.mkdir()
    yield agent, services, files
    assert services.jobs is not None
    await services.jobs.close(grace_s=0)
    await stopper.stop()


def post(agent: Agent, path: str, body: dict[str, Any]) -> Any:
    return request(agent, "POST", path, json.dumps(body).encode())


def error(status: int, env: dict[str, Any], http: int, code: str) -> dict[str, Any]:
    assert status == http, env
    assert env["ok"] is False and env["error"]["code"] == code
    details: dict[str, Any] = env["error"]["details"]
    return details


async def test_run_returns_the_full_record_and_deletes(api: tuple[Agent, Services, Path]) -> None:
    agent, _, files = api
    (files / "x").write_bytes(b"\0" * 123456)
    status, env = await post(agent, "/v1/jobs/selftest/run", {"dry_run": True})
    assert status == 200 and env["data"]["status"] == "ok"
    assert env["data"]["freed_bytes"] == 123456 and (files / "x").exists()
    status, env = await post(agent, "/v1/jobs/selftest/run", {"mode": "quick"})
    rec = env["data"]
    assert set(rec) == RUN_KEYS
    assert (rec["status"], rec["freed_bytes"], rec["trigger"]) == ("ok", 123456, "api")
    assert rec["peer"].startswith("uid=0 ")
    assert rec["steps"][0]["name"] == "delete:x" and not (files / "x").exists()
    status, env = await request(agent, "GET", f"/v1/runs/{rec['id']}")
    assert status == 200 and env["data"] == rec


async def test_no_wait_returns_the_id_then_the_record_finishes(
        api: tuple[Agent, Services, Path]) -> None:
    agent, _, files = api
    (files / "y").write_bytes(b"y" * 10)
    status, env = await post(agent, "/v1/jobs/selftest/run", {"wait": False})
    assert status == 200 and env["data"]["status"] == "running"
    assert env["data"]["job"] == "selftest"  # so a client can say what to follow
    run_id = env["data"]["id"]
    for _ in range(100):
        _, env = await request(agent, "GET", f"/v1/runs/{run_id}")
        if env["data"]["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert env["data"]["status"] == "ok" and env["data"]["freed_bytes"] == 10


async def test_second_run_is_409_with_the_running_id(api: tuple[Agent, Services, Path]) -> None:
    agent, _, _ = api
    _, env = await post(agent, "/v1/jobs/selftest/run", {"mode": "slow", "wait": False})
    running = env["data"]["id"]
    status, env = await post(agent, "/v1/jobs/selftest/run", {"dry_run": True})
    details = error(status, env, 409, "conflict")
    assert details["running_run_id"] == running
    _, env = await request(agent, "GET", "/v1/jobs/selftest/runs")
    assert [(r["id"], r["status"]) for r in env["data"]] == [
        (details["run_id"], "skipped"), (running, "running")]


async def test_hold_is_423_with_a_skipped_record_and_dry_run_still_works(
        api: tuple[Agent, Services, Path]) -> None:
    agent, _, files = api
    (files / "keep").write_bytes(b"k")
    await request(agent, "PUT", "/v1/hold", b'{"reason": "backup restore"}')
    status, env = await post(agent, "/v1/jobs/selftest/run", {})
    details = error(status, env, 423, "locked")
    _, rec = await request(agent, "GET", f"/v1/runs/{details['run_id']}")
    assert rec["data"]["status"] == "skipped" and "backup restore" in rec["data"]["reason"]
    status, env = await post(agent, "/v1/jobs/selftest/run", {"dry_run": True})
    assert status == 200 and env["data"]["steps"][0]["status"] == "planned"
    assert (files / "keep").exists()


@pytest.mark.parametrize("path,body,field", [
    ("/v1/jobs/selftest/run", {"mode": "weekly"}, "mode"),
    ("/v1/jobs/selftest/run", {"mode": "Bad Mode"}, "mode"),
    ("/v1/jobs/selftest/run", {"dry_run": "yes"}, "dry_run"),
    ("/v1/jobs/selftest/run", {"force": True}, "force"),
    ("/v1/jobs/selftest/run", {"trigger": "cron"}, "trigger"),
    ("/v1/jobs/Bad!/run", {}, "job"),
])
async def test_bad_run_params_are_400_naming_the_field(
        api: tuple[Agent, Services, Path], path: str, body: dict[str, Any], field: str) -> None:
    status, env = await post(api[0], path, body)
    assert error(status, env, 400, "bad_request")["field"] == field


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=ten", "limit=-1"])
async def test_bad_limit_is_400(api: tuple[Agent, Services, Path], query: str) -> None:
    status, env = await request(api[0], "GET", f"/v1/jobs/selftest/runs?{query}")
    assert error(status, env, 400, "bad_request")["field"] == "limit"


@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/jobs/nope/run"), ("GET", "/v1/jobs/nope/runs"), ("GET", "/v1/runs/999"),
])
async def test_unknown_job_or_run_is_404(api: tuple[Agent, Services, Path], method: str,
                                         path: str) -> None:
    status, env = await request(api[0], method, path, b"{}" if method == "POST" else b"")
    error(status, env, 404, "not_found")


async def test_runs_are_newest_first_and_limited(api: tuple[Agent, Services, Path]) -> None:
    agent = api[0]
    ids = [(await post(agent, "/v1/jobs/selftest/run", {"dry_run": True}))[1]["data"]["id"]
           for _ in range(3)]
    _, env = await request(agent, "GET", "/v1/jobs/selftest/runs?limit=2")
    assert [r["id"] for r in env["data"]] == ids[:0:-1]
    _, env = await request(agent, "GET", "/v1/jobs")
    job = next(j for j in env["data"]["jobs"] if j["name"] == "selftest")
    assert job["last_run"]["id"] == ids[-1] and job["last_run"]["dry_run"] is True
    assert {"schedule", "timer", "next_run", "modes"} <= set(job)


async def test_viewer_may_list_but_not_run(api: tuple[Agent, Services, Path]) -> None:
    require_root()
    agent, _, files = api
    (files / "z").write_bytes(b"z")
    status, env = await request_as(VIEWER_UID, agent, "POST", "/v1/jobs/selftest/run", "{}")
    error(status, env, 403, "forbidden")
    assert (files / "z").exists()
    for path in ("/v1/jobs", "/v1/jobs/selftest/runs"):
        status, env = await request_as(VIEWER_UID, agent, "GET", path)
        assert status == 200, env


async def test_jobs_shows_schedules_timers_and_the_legacy_crontab(
        api: tuple[Agent, Services, Path]) -> None:
    agent, _, files = api
    (files.parent / "crontab").write_text(
        "SHELL=/bin/sh\n# bytelyst-vm-maintenance BEGIN\n"
        "30 3 * * * root /usr/local/bin/vm-cleanup.sh\n# bytelyst-vm-maintenance END\n")
    status, env = await request(agent, "GET", "/v1/jobs")
    assert status == 200
    by_name = {j["name"]: j for j in env["data"]["jobs"]}
    cleanup = by_name["cleanup"]  # scheduled; the catalog here has selftest only
    assert cleanup["available"] is False
    assert {s["mode"] for s in cleanup["schedules"]} == {"standard", "weekly", "monthly"}
    assert cleanup["next_run"] == min(s["next_run"] for s in cleanup["schedules"])
    assert by_name["watchdog"]["schedule"] == "*/10 * * * *"
    assert by_name["watchdog"]["timer"] == "vm-agent-watchdog.timer"
    assert by_name["selftest"]["schedule"] is None and by_name["selftest"]["available"]
    legacy = env["data"]["legacy_crontab"]
    assert [(e["schedule"], e["user"]) for e in legacy] == [("30 3 * * *", "root")]
