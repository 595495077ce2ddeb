"""The score card and the metrics textfile on a real agent: real socket, real store, the
real ``promtool check metrics`` (Debian's prometheus package) and the real vm-agentctl."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.jobs.base import StepResult
from agent.metrics_export import MetricsExporter
from tests.integration.agentproc import CTL
from tests.protocol.conftest import (  # noqa: F401 (agent_server: a fixture, used by name)
    VIEWER_UID,
    Agent,
    agent_server,
    request,
    request_as,
)

pytestmark = pytest.mark.integration
PROMTOOL = "/usr/bin/promtool"


@pytest.fixture
def agent(agent_server: Agent) -> Agent:  # noqa: F811 (the imported fixture)
    """tests/protocol's agent on ``short_tmp`` (its metrics textfile is short_tmp/vm-agent.prom)."""
    return agent_server


def promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    with path.open() as f:
        return subprocess.run([PROMTOOL, "check", "metrics"], stdin=f, capture_output=True,
                              text=True, timeout=30)


def values(path: Path) -> dict[str, float]:
    """``name{k="v",...}`` -> value, labels sorted."""
    out = {}
    for fam in text_string_to_metric_families(path.read_text()):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


def add_cleanup(agent: Agent, freed: int) -> None:
    assert agent.services.jobs is not None
    records = agent.services.jobs.records
    rid = records.start(job="cleanup", mode="standard", dry_run=False, trigger="api",
                        peer=None, pid=1)
    records.add_step(rid, StepResult("docker_build_cache", "ok", freed_bytes=freed))
    records.finish(rid, status="ok", reason=None, disk_after=None)


async def stable_write(agent: Agent, path: Path) -> dict[str, Any]:
    """Write once between two identical host samples; returns that sample (wire)."""
    for _ in range(5):
        before = (await agent.services.sampler.latest()).to_wire()
        await MetricsExporter(agent.services, path=str(path), interval_s=60).write_once()
        if (await agent.services.sampler.latest()).to_wire() == before:
            return before
    raise AssertionError("host sample kept changing")


async def test_textfile_passes_promtool_and_matches_the_agent(agent: Agent,
                                                              short_tmp: Path) -> None:
    add_cleanup(agent, 5_000_000)
    add_cleanup(agent, 7)
    path = short_tmp / "vm-agent.prom"
    sample = await stable_write(agent, path)
    check = promtool_check(path)
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")
    got = values(path)
    status, env = await request(agent, "GET", "/v1/score")
    assert status == 200
    assert got["vmagent_score"] == env["data"]["score"]
    assert got["vmagent_cpu_steal_percent"] == sample["cpu"]["steal_percent"]
    assert got["vmagent_docker_up"] == 0  # no Docker in this agent
    assert "vmagent_containers_unhealthy" not in got
    assert got["vmagent_cleanup_freed_bytes_total"] == 5_000_007
    assert got["vmagent_cleanup_last_freed_bytes"] == 7
    assert got['vmagent_job_last_status{job="cleanup",status="ok"}'] == 1
    assert got['vmagent_job_last_status{job="cleanup",status="failed"}'] == 0
    assert got["vmagent_watchdog_restarts_total"] == 0
    assert got["vmagent_alerts_sent_total"] == 0 and got["vmagent_alerts_failed_total"] == 0
    assert path.stat().st_mode & 0o777 == 0o644


async def test_a_broken_textfile_fails_promtool(short_tmp: Path) -> None:
    bad = short_tmp / "bad.prom"
    bad.write_text("# TYPE vmagent_x_bytes counter\nvmagent_x_bytes 1\n")
    assert promtool_check(bad).returncode != 0  # the check above can fail


async def test_the_loop_rewrites_the_file_until_stopped(agent: Agent, short_tmp: Path) -> None:
    path = short_tmp / "loop.prom"
    exporter = MetricsExporter(agent.services, path=str(path), interval_s=0.2)
    await exporter.start()
    for _ in range(100):
        if path.exists():
            break
        await asyncio.sleep(0.05)
    first = short_tmp / "first"
    os.link(path, first)  # keeps the first file's inode alive
    await asyncio.sleep(0.6)
    assert not path.samefile(first)  # rewritten (renamed over)
    await exporter.stop()
    last = path.stat().st_mtime_ns
    await asyncio.sleep(0.5)
    assert path.stat().st_mtime_ns == last and exporter.last_error is None


async def test_a_missing_folder_is_reported_once_and_the_loop_goes_on(
        agent: Agent, short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    exporter = MetricsExporter(agent.services, path=str(short_tmp / "no" / "x.prom"),
                               interval_s=0.1)
    await exporter.start()
    await asyncio.sleep(0.5)
    await exporter.stop()
    assert exporter.last_error is not None and "No such file" in exporter.last_error
    assert sum("metrics textfile not written" in r.message for r in caplog.records) == 1


async def test_empty_path_is_off(agent: Agent) -> None:
    exporter = MetricsExporter(agent.services, path="", interval_s=5)
    await exporter.start()
    assert exporter._task is None
    await exporter.stop()


async def test_score_for_a_viewer_and_through_vm_agentctl(agent: Agent) -> None:
    status, env = await request_as(VIEWER_UID, agent, "GET", "/v1/score")
    assert status == 200
    card = env["data"]
    assert set(card) == {"score", "dimensions"}
    assert [d["name"] for d in card["dimensions"]] == [
        "cpu_efficiency", "memory_pressure", "disk_health", "service_health",
        "maintenance_hygiene", "llm_readiness"]
    assert card["score"] == sum(d["points"] for d in card["dimensions"])
    service = card["dimensions"][3]
    assert (service["points"], service["value"]) == (2, None)  # Docker absent: worst band
    assert "Docker is unreachable" in service["reason"]
    hygiene = card["dimensions"][4]
    assert (hygiene["points"], hygiene["value"]) == (0, None)
    out = await asyncio.to_thread(subprocess.run, [CTL, "--socket", agent.socket_path, "score"],
                                  capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("score ") and "maintenance_hygiene" in out.stdout
    js = await asyncio.to_thread(subprocess.run,
                                 [CTL, "--socket", agent.socket_path, "score", "--json"],
                                 capture_output=True, text=True, timeout=30)
    assert set(json.loads(js.stdout)) == {"score", "dimensions"}
