"""The container commands over the real protocol socket, on the tests' own Docker engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dockerd import TestEngine
from tests.integration.watchdog_kit import run_flip, state, wait_for
from tests.protocol.conftest import VIEWER_UID, Agent, request, request_as, start_agent

pytestmark = pytest.mark.integration


@asynccontextmanager
async def serve(tmp: Path, docker_host: str, **watchdog: Any) -> AsyncIterator[Agent]:
    """The protocol test agent (tests/protocol/conftest.py) on the tests' own engine."""
    agent, _runner, stopper = await start_agent(tmp, docker_host=docker_host,
                                               watchdog=watchdog)
    try:
        yield agent
    finally:
        await stopper.stop()


@pytest.fixture
async def api(engine: TestEngine, short_tmp: Path) -> AsyncIterator[Agent]:
    async with serve(short_tmp, engine.host, protected=("keep-me",), max_restarts=1) as agent:
        yield agent


async def get(api: Agent, path: str) -> tuple[int, Any]:
    status, env = await request(api, "GET", path)
    return status, env["data"] if env["ok"] else env["error"]


async def post(api: Agent, path: str) -> tuple[int, Any]:
    status, env = await request(api, "POST", path)
    return status, env["data"] if env["ok"] else env["error"]


def until_unhealthy(engine: TestEngine, *names: str) -> None:
    for name in names:
        wait_for(lambda n=name: state(engine, n)["Health"]["Status"] == "unhealthy", 10, name)


async def test_list_filters_and_fields(engine: TestEngine, api: Agent) -> None:
    engine.client().containers.run(
        "vmagent-test/busybox:latest", ["sleep", "300"], name="shop-web", detach=True,
        network_mode="none", mem_limit="64m", labels={"com.docker.compose.project": "shop"})
    run_flip(engine, "bad", healthy_at_start=False)
    engine.run_stopped("done")
    until_unhealthy(engine, "bad")

    status, rows = await get(api, "/v1/containers")
    assert status == 200
    by_name = {r["name"]: r for r in rows}
    assert list(by_name) == ["bad", "done", "shop-web"]
    web_row = by_name["shop-web"]
    assert web_row["stack"] == "shop" and web_row["memory_limit_bytes"] == 64 * 1024 * 1024
    assert web_row["memory_bytes"] > 0  # read from the container's cgroup
    assert web_row["health"] == "none" and web_row["uptime_s"] >= 0
    assert web_row["image_created_at"].endswith("Z")
    assert by_name["done"]["state"] == "exited" and by_name["done"]["memory_bytes"] is None
    assert by_name["bad"]["health"] == "unhealthy" and by_name["bad"]["health_since"]
    assert by_name["bad"]["watchdog"]["enabled"] is True

    assert [r["name"] for r in (await get(api, "/v1/containers?filter=unhealthy"))[1]] == ["bad"]
    no_limit = (await get(api, "/v1/containers?filter=no-memory-limit"))[1]
    assert [r["name"] for r in no_limit] == ["bad", "done"]
    assert [r["name"] for r in (await get(api, "/v1/containers?stack=shop"))[1]] == ["shop-web"]


async def test_unhealthy_health_and_logs(engine: TestEngine, api: Agent) -> None:
    engine.run("talker", command=["sh", "-c", "for i in 1 2 3; do echo out$i; sleep 0.1; "
                                              "echo err$i >&2; sleep 0.1; done; sleep 300"])
    run_flip(engine, "bad", healthy_at_start=False)
    until_unhealthy(engine, "bad")
    wait_for(lambda: state(engine, "bad")["Health"]["FailingStreak"] >= 4, 10, "4 failures")

    [row] = (await get(api, "/v1/containers/unhealthy"))[1]
    assert row["name"] == "bad" and row["failing_streak"] >= 4
    assert len(row["last_checks"]) == 3
    assert row["last_checks"][0]["end"] >= row["last_checks"][1]["end"]  # newest first
    health = (await get(api, "/v1/containers/bad/health"))[1]
    assert health["healthcheck"]["interval_s"] == 1.0 and len(health["log"]) >= 4

    logs = (await get(api, "/v1/containers/talker/logs?tail=2"))[1]
    assert [line["text"] for line in logs["lines"]] == ["out3", "err3"]
    assert all(line["time"].startswith("20") for line in logs["lines"])
    assert len((await get(api, "/v1/containers/talker/logs"))[1]["lines"]) == 6


@pytest.mark.parametrize("path,field", [
    ("/v1/containers/talker/logs?tail=501", "tail"),
    ("/v1/containers/talker/logs?tail=0", "tail"),
    ("/v1/containers/-bad/health", "name"),
    ("/v1/containers/a%2F..%2Fb/health", "name"),
    (f"/v1/containers/{'a' * 256}/health", "name"),
    ("/v1/containers?filter=everything", "filter"),
])
async def test_bad_params_are_400(api: Agent, path: str, field: str) -> None:
    status, error = await get(api, path)
    assert (status, error["code"], error["details"]["field"]) == (400, "bad_request", field)


async def test_restart_rules(engine: TestEngine, api: Agent) -> None:
    run_flip(engine, "web")
    run_flip(engine, "keep-me")
    before = state(engine, "web")["StartedAt"]

    assert (await post(api, "/v1/containers/nope/restart"))[0] == 404
    status, error = await post(api, "/v1/containers/keep-me/restart")
    assert (status, error["code"]) == (403, "forbidden")
    viewer_status, _ = await request_as(VIEWER_UID, api, "POST", "/v1/containers/web/restart")
    assert viewer_status == 403
    api.services.hold.set("maintenance", by="test")
    assert (await post(api, "/v1/containers/web/restart"))[0] == 423
    api.services.hold.clear()

    status, done = await post(api, "/v1/containers/web/restart")
    assert status == 200 and done["result"] == "restarted"
    assert state(engine, "web")["StartedAt"] != before
    status, error = await post(api, "/v1/containers/web/restart")  # max_restarts 1
    assert (status, error["code"]) == (429, "rate_limited")
    assert 3500 < error["details"]["retry_after_s"] <= 3600
    audited = [json.loads(line) for line in api.audit_stream.getvalue().splitlines()]
    assert [e["VMAGENT_RESULT"] for e in audited
            if e.get("VMAGENT_ACTION") == "operator.restart"] == ["ok"]


async def test_restart_unhealthy_gives_per_container_results(engine: TestEngine,
                                                             api: Agent) -> None:
    run_flip(engine, "bad", healthy_at_start=False)
    run_flip(engine, "keep-me", healthy_at_start=False)
    run_flip(engine, "fine")
    until_unhealthy(engine, "bad", "keep-me")

    status, data = await post(api, "/v1/containers/restart-unhealthy")

    assert status == 200
    results = {r["name"]: r for r in data["results"]}
    assert results["bad"]["result"] == "restarted"
    assert results["keep-me"]["result"] == "skipped"
    assert "fine" not in results
    assert (data["restarted"], data["skipped"], data["failed"]) == (1, 1, 0)


async def test_docker_down_is_503_but_bad_names_fail_first(short_tmp: Path) -> None:
    async with serve(short_tmp, f"unix://{short_tmp}/no-docker.sock") as served:
        status, error = await get(served, "/v1/containers")
        assert (status, error["code"], error["details"]["upstream"]) == \
            (503, "upstream_unavailable", "docker")
        assert (await post(served, "/v1/containers/web/restart"))[0] == 503
        assert (await post(served, "/v1/containers/.web/restart"))[0] == 400  # before Docker
