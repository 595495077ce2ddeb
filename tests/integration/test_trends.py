"""Trends from a real Prometheus (Debian's) with 30 days of backfilled history.

The history (one sample every 2 min, ending at the fixture's ``END``): disk
``/`` rising 0.5 %/day to 65 %; ``/srv/app.data`` a sawtooth (baseline
+0.4 %/day, +10 % a day wiped by a cleanup at 03:00 UTC); a decoy
``/srv/appXdata`` at 99 % that a mount regex without escaping would match;
steal counters of 0.04 and 0.02 s/s on two CPUs (3 %); MemAvailable 3 GB;
swap 600 MB used; the agent's vmagent_containers_unhealthy 0 then 2 for the
last 12 h; cAdvisor writes of 1 MB/s (db) and 250 kB/s (web), plus the root
cgroup (``name=""``) the io query must leave out.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent import cli
from agent import prometheus as prom
from agent.api.handlers.trend import trend_data
from agent.config import Config, PrometheusConfig, SamplingConfig
from agent.errors import UpstreamTimeout, UpstreamUnavailable
from tests.integration.prometheus_kit import missing_tools, prometheus_with
from tests.protocol.conftest import request, start_agent

STEP_S = 120
SPAN_S = 30 * 86400 + 4 * 3600  # rate windows (up to 2 h) at the first step are full
DAY = 86400
MOUNTS = ("/", "/srv/app.data")
SIZE = 100e9


def _root_pct(t: float, end: float) -> float:
    return 65 - 0.5 * (end - t) / DAY


def _saw_pct(t: float, end: float) -> float:
    return 42 - 0.4 * (end - t) / DAY + 10 * ((t - 3 * 3600) % DAY) / DAY


def _lines(name: str, labels: str, values: Iterator[tuple[float, float]]) -> list[str]:
    return [f"{name}{{{labels}}} {v:.17g} {t:.0f}" for t, v in values]


def trend_series(end: float) -> str:
    """OpenMetrics text of the module docstring's history."""
    times = [end - SPAN_S + i * STEP_S for i in range(SPAN_S // STEP_S + 1)]
    pct = {"/": lambda t: _root_pct(t, end), "/srv/app.data": lambda t: _saw_pct(t, end),
           "/srv/appXdata": lambda t: 99.0}
    out = []
    for metric in ("size", "free", "avail"):
        out.append(f"# TYPE node_filesystem_{metric}_bytes gauge")
        for mount, f in pct.items():
            values = ((t, SIZE if metric == "size" else SIZE * (1 - f(t) / 100)) for t in times)
            out += _lines(f"node_filesystem_{metric}_bytes",
                          f'instance="vm1",mountpoint="{mount}",fstype="ext4"', values)
    out.append("# TYPE node_cpu_seconds_total counter")
    for cpu, per_s in (("0", 0.04), ("1", 0.02)):
        out += _lines("node_cpu_seconds_total", f'instance="vm1",cpu="{cpu}",mode="steal"',
                      ((t, (t - times[0]) * per_s) for t in times))
    for name, value in (("MemAvailable", 3e9), ("SwapTotal", 4e9), ("SwapFree", 3.4e9)):
        out.append(f"# TYPE node_memory_{name}_bytes gauge")
        out += _lines(f"node_memory_{name}_bytes", 'instance="vm1"', ((t, value) for t in times))
    out.append("# TYPE vmagent_containers_unhealthy gauge")
    out += _lines("vmagent_containers_unhealthy", 'instance="vm1"',
                  ((t, 2.0 if end - t < 12 * 3600 else 0.0) for t in times))
    out.append("# TYPE container_fs_writes_bytes_total counter")
    for name, per_s in (("db", 1e6), ("web", 2.5e5), ("", 9e9)):
        out += _lines("container_fs_writes_bytes_total", f'instance="vm1",name="{name}"',
                      ((t, (t - times[0]) * per_s) for t in times))
    return "\n".join([*out, "# EOF", ""])


@pytest.fixture(scope="module")
def prom_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, float]]:
    if why := missing_tools():
        pytest.skip(why)
    end = time.time()
    with prometheus_with(trend_series(end), tmp_path_factory.mktemp("prom"),
                         retention="60d", max_block="240h") as url:
        yield url, end


def config(url: str, **prometheus: Any) -> Config:
    cfg = Config()
    return replace(cfg, prometheus=PrometheusConfig(url=url, timeout_s=30, **prometheus),
                   sampling=SamplingConfig(disks=MOUNTS))


def _values(reply: dict[str, Any], name: str) -> list[float]:
    (s,) = [s for s in reply["series"] if s["name"] == name]
    return [v for _t, v in s["points"]]


@pytest.mark.parametrize("range_name", list(prom.RANGES))
async def test_every_kind_and_range(prom_url: tuple[str, float], range_name: str) -> None:
    url, end = prom_url
    cfg = config(url)
    for kind in prom.KINDS:
        got = await trend_data(cfg, kind, range_name, now=end)
        assert (got["kind"], got["range"], got["step_s"]) == (
            kind, range_name, prom.choose_step(prom.RANGES[range_name]))
        assert got["series"], (kind, got)
        for s in got["series"]:
            n = len(s["points"])
            assert 0.9 * prom.RANGES[range_name] / got["step_s"] <= n <= prom.TARGET_POINTS + 1
            assert all(got["start"] <= t <= got["end"] for t, _v in s["points"])
    disk = await trend_data(cfg, "disk", range_name, now=end)
    assert sorted(s["name"] for s in disk["series"]) == sorted(MOUNTS)  # no decoy
    assert max(_values(disk, "/")) == pytest.approx(65, abs=0.1)
    memory = await trend_data(cfg, "memory", range_name, now=end)
    assert set(_values(memory, "MemAvailable")) == {3e9}
    assert _values(memory, "swap_used") == pytest.approx([6e8] * len(_values(memory, "swap_used")))
    steal = _values(await trend_data(cfg, "steal", range_name, now=end), "steal")
    assert steal == pytest.approx([3.0] * len(steal), rel=1e-6)
    unhealthy = _values(await trend_data(cfg, "containers", range_name, now=end), "unhealthy")
    assert unhealthy[-1] == 2 and set(unhealthy) <= {0, 2}
    io = await trend_data(cfg, "io", range_name, now=end)
    assert [s["name"] for s in io["series"]] == ["db", "web"]
    assert _values(io, "db") == pytest.approx([1e6] * len(_values(io, "db")), rel=1e-6)


async def test_disk_projection_from_thirty_days(prom_url: tuple[str, float]) -> None:
    url, end = prom_url
    got = (await trend_data(config(url), "disk", "1h", now=end))["projection"]
    by_mount = {m["mount"]: m for m in got["mounts"]}
    assert by_mount["/"]["state"] == "rising"
    assert by_mount["/"]["slope_percent_per_day"] == pytest.approx(0.5, abs=0.01)
    assert by_mount["/"]["days_to_warn"] == pytest.approx(30, abs=0.3)  # (80 - 65) / 0.5
    assert by_mount["/"]["days_of_data"] >= 30
    saw = by_mount["/srv/app.data"]
    peak_now = 42 + 10 * (1 - STEP_S / DAY)  # the line through the pre-cleanup peaks, now
    assert saw["slope_percent_per_day"] == pytest.approx(0.4, abs=0.02)
    assert saw["days_to_warn"] == pytest.approx((80 - peak_now) / 0.4, abs=1.0)
    assert got["days_to_warn"] == by_mount["/"]["days_to_warn"]
    assert "Theil-Sen" in got["method"]


async def test_selector_narrows_and_an_unmatched_one_is_empty_with_a_note(
        prom_url: tuple[str, float]) -> None:
    url, end = prom_url
    got = await trend_data(config(url, selector='instance="vm1"'), "steal", "24h", now=end)
    assert got["series"] and "note" not in got
    empty = await trend_data(config(url, selector='instance="vm2"'), "steal", "24h", now=end)
    assert empty["series"] == [] and 'matching instance="vm2"' in empty["note"]


async def test_a_query_prometheus_rejects_is_an_error_not_empty_data(
        prom_url: tuple[str, float]) -> None:
    url, end = prom_url
    bad_selector = config(url, selector='instance=~"("')  # an invalid regex: bad_data
    with pytest.raises(UpstreamUnavailable) as exc:
        await trend_data(bad_selector, "disk", "24h", now=end)
    assert exc.value.details["error_type"] == "bad_data"
    assert exc.value.details["upstream"] == "prometheus" and exc.value.http_status == 503
    async with aiohttp.ClientSession() as session:  # 11,001 points: Prometheus refuses
        with pytest.raises(UpstreamUnavailable, match="11,000 points") as exc:
            await prom.query_range(session, url, "up", start=end - 11_001, end=end, step_s=1,
                                   timeout_s=10)
    assert exc.value.details["error_type"] == "bad_data"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_prometheus_down_and_silent(tmp_path: Path) -> None:
    with pytest.raises(UpstreamUnavailable) as exc:
        await trend_data(config(f"http://127.0.0.1:{_closed_port()}"), "disk", "1h",
                         now=time.time())
    assert exc.value.details["error_type"] == "unreachable"
    assert "check prometheus.url" in exc.value.message  # says what to do

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cfg = replace(config(f"http://127.0.0.1:{port}"),
                      prometheus=PrometheusConfig(url=f"http://127.0.0.1:{port}", timeout_s=0.5))
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as timeout:
            await trend_data(cfg, "steal", "1h", now=time.time())
        assert time.monotonic() - started < 5 and timeout.value.http_status == 504
    finally:
        server.close()


@pytest.fixture
async def agent_with(short_tmp: Path, prom_url: tuple[str, float]) -> AsyncIterator[Any]:
    agents = []

    async def start(url: str) -> Any:
        agent, runner, stopper = await start_agent(short_tmp / str(len(agents)),
                                                   prometheus={"url": url, "timeout_s": 30})
        agents.append((runner, stopper))
        return agent

    yield start
    for _runner, stopper in agents:
        await stopper.stop()


async def test_through_the_protocol_and_the_cli(agent_with: Any, prom_url: tuple[str, float],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    agent = await agent_with(prom_url[0])
    for kind in prom.KINDS:
        for range_name in prom.RANGES:
            status, env = await request(agent, "GET",
                                        f"/v1/metrics/trend/{kind}?range={range_name}")
            assert status == 200, env
            data = env["data"]
            assert {"kind", "range", "step_s", "series", "projection"} <= set(data)
            assert data["series"] and (data["projection"] is not None) == (kind == "disk")
    status, env = await request(agent, "GET", "/v1/metrics/trend/disk?range=5m")
    assert (status, env["error"]["details"]["field"]) == (400, "range")
    status, env = await request(agent, "GET", "/v1/metrics/trend/up")
    assert (status, env["error"]["details"]["field"]) == (400, "kind")
    status, env = await request(agent, "GET", "/v1/metrics/trend/disk?query=up")
    assert status == 400
    code = await asyncio.to_thread(cli.main, ["--socket", agent.socket_path, "trend", "disk",
                                              "--range", "7d"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("disk over 7d (step 1800 s)\n")
    assert "projection: /: ~30 days until 80 % (+0.50 %/day)" in out


async def test_protocol_errors_down_and_unconfigured(agent_with: Any) -> None:
    down = await agent_with(f"http://127.0.0.1:{_closed_port()}")
    status, env = await request(down, "GET", "/v1/metrics/trend/steal?range=1h")
    assert status == 503 and env["error"]["code"] == "upstream_unavailable"
    assert env["error"]["details"]["upstream"] == "prometheus"
    unset = await agent_with("")
    status, env = await request(unset, "GET", "/v1/metrics/trend/disk")
    assert status == 503 and env["error"]["message"] == "prometheus.url is not configured"
