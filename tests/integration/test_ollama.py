"""The /v1/ollama/* commands end to end: the real agent on a Unix socket, talking to a
local Ollama stand-in (``ollama_kit``) over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.host.meminfo import read_meminfo
from agent.ollamahost import NO_GPU_NOTE
from tests.integration.ollama_kit import OllamaStandIn
from tests.protocol.conftest import VIEWER_UID, Agent, request, request_as, start_agent

FLOOR = 200_000_000
WARN = 300_000_000


@dataclass
class Rig:
    agent: Agent
    ollama: OllamaStandIn
    big_size: int


async def _start(tmp: Path, url: str, **ollama: Any) -> tuple[Agent, web.AppRunner, Any]:
    (tmp / "dev").mkdir(exist_ok=True)
    cfg = {"url": url, "free_floor_bytes": FLOOR, "warn_free_bytes": WARN,
           "dev_root": str(tmp / "dev"), **ollama}
    return await start_agent(tmp, ollama=cfg)


@pytest.fixture
async def rig(short_tmp: Path) -> AsyncIterator[Rig]:
    # "big" leaves ~100 MB of today's MemAvailable: under the 200 MB floor.
    big = read_meminfo().available_bytes - 100_000_000
    stand_in = OllamaStandIn(models={"big:latest": big, "small:latest": 1_000_000,
                                     "team/tool:v1.2": 2_000_000})
    await stand_in.start()
    agent, _runner, stopper = await _start(short_tmp, stand_in.url)
    yield Rig(agent, stand_in, big)
    await stopper.stop()
    await stand_in.stop()


async def _post(agent: Agent, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return await request(agent, "POST", path, json.dumps(body).encode(),
                         headers="Content-Type: application/json\r\n")


async def test_models_lists_size_utc_time_and_loaded(rig: Rig) -> None:
    rig.ollama.loaded["small:latest"] = 0
    status, env = await request(rig.agent, "GET", "/v1/ollama/models")
    assert status == 200, env
    rows = {r["name"]: r for r in env["data"]}
    assert set(rows) == {"big:latest", "small:latest", "team/tool:v1.2"}
    assert rows["small:latest"] == {"name": "small:latest", "size_bytes": 1_000_000,
                                    "modified_at": "2024-05-06T17:11:12Z", "loaded": True}
    assert rows["big:latest"]["loaded"] is False


async def test_loaded_shares_ram_bar_and_no_gpu(rig: Rig) -> None:
    rig.ollama.models["mid:latest"] = 10_000_000
    rig.ollama.loaded["mid:latest"] = 4_000_000
    status, env = await request(rig.agent, "GET", "/v1/ollama/loaded")
    assert status == 200, env
    data = env["data"]
    assert data["models"] == [{"name": "mid:latest", "size_bytes": 10_000_000,
                               "ram_bytes": 6_000_000, "vram_bytes": 4_000_000,
                               "cpu_percent": data["models"][0]["cpu_percent"],
                               "rss_bytes": data["models"][0]["rss_bytes"],
                               "expires_at": "2024-06-04T21:38:31Z"}]
    ram, total = data["ram"], read_meminfo().total_bytes
    assert ram["total_bytes"] == total and ram["models_bytes"] == 6_000_000
    assert ram["system_used_bytes"] + ram["models_bytes"] + ram["free_bytes"] == total
    assert data["gpu"] == {"present": False, "devices": [], "note": NO_GPU_NOTE}


@pytest.fixture
def fake_runner(short_tmp: Path) -> Any:
    """A real process named ``ollama`` started as ``ollama ... runner --model x``."""
    link = short_tmp / "ollama"
    link.symlink_to(os.path.realpath(sys.executable))
    proc = subprocess.Popen([str(link), "-c", "import time; time.sleep(60)", "runner",
                             "--model", "x"])
    yield proc
    proc.kill()
    proc.wait()


async def test_loaded_attributes_the_runner_process(rig: Rig, fake_runner: Any) -> None:
    await asyncio.sleep(0.3)  # the interpreter is up and mapped
    rig.ollama.loaded["small:latest"] = 0
    status, env = await request(rig.agent, "GET", "/v1/ollama/loaded")
    assert status == 200, env
    runner, row = env["data"]["runner"], env["data"]["models"][0]
    assert fake_runner.pid in runner["pids"]
    assert runner["rss_bytes"] > 1_000_000 and row["rss_bytes"] == runner["rss_bytes"]
    assert 0 <= row["cpu_percent"] <= 100


async def test_load_impact_levels_and_warning(rig: Rig) -> None:
    status, env = await request(rig.agent, "GET", "/v1/ollama/load-impact?model=big")
    assert status == 200, env
    big = env["data"]
    assert big["model"] == "big:latest" and big["size_bytes"] == rig.big_size
    assert big["predicted_free_bytes"] == big["available_bytes"] - rig.big_size
    assert big["level"] == "CRIT"
    assert re.fullmatch(r"Loading big:latest \(\d+\.\d GB\) will leave ~0\.\d GB free; "
                        r"swap pressure likely", big["warning"]), big["warning"]
    status, env = await request(rig.agent, "GET", "/v1/ollama/load-impact?model=small:latest")
    assert env["data"]["level"] == "OK"
    assert env["data"]["warning"].startswith("Loading small:latest (0.0 GB) will leave ~")
    assert not rig.ollama.generate_bodies()


async def test_load_refused_under_the_floor(rig: Rig) -> None:
    status, env = await _post(rig.agent, "/v1/ollama/load", {"model": "big"})
    assert status == 409, env
    assert env["error"]["code"] == "conflict"
    assert "swap pressure likely" in env["error"]["message"]
    assert env["error"]["details"]["impact"]["level"] == "CRIT"
    assert rig.ollama.generate_bodies() == [] and rig.ollama.loaded == {}


async def test_forced_load_sends_no_prompt(rig: Rig) -> None:
    status, env = await _post(rig.agent, "/v1/ollama/load", {"model": "big", "force": True})
    assert status == 200, env
    assert env["data"]["forced"] is True and env["data"]["done_reason"] == "load"
    assert rig.ollama.generate_bodies() == [{"model": "big:latest", "stream": False}]
    assert "big:latest" in rig.ollama.loaded
    audit = [e for e in rig.agent.audit_entries() if e.get("VMAGENT_COMMAND") == "ollama.load"]
    assert audit, rig.agent.audit_entries()


async def test_load_above_the_floor_needs_no_force(rig: Rig) -> None:
    status, env = await _post(rig.agent, "/v1/ollama/load", {"model": "team/tool:v1.2"})
    assert status == 200, env
    assert rig.ollama.generate_bodies() == [{"model": "team/tool:v1.2", "stream": False}]


async def test_unload_sends_keep_alive_number_zero(rig: Rig) -> None:
    rig.ollama.loaded["small:latest"] = 0
    status, env = await _post(rig.agent, "/v1/ollama/unload", {"model": "small"})
    assert status == 200, env
    assert env["data"] == {"model": "small:latest", "was_loaded": True, "unloaded": True,
                           "done_reason": "unload"}
    raw = [r.raw for r in rig.ollama.requests if r.path == "/api/generate"]
    assert len(raw) == 1 and re.search(rb'"keep_alive":\s*0[,}]', raw[0]), raw
    body = json.loads(raw[0])
    assert type(body["keep_alive"]) is int and body["keep_alive"] == 0
    assert rig.ollama.loaded == {}


async def test_unload_of_a_model_not_loaded_sends_nothing(rig: Rig) -> None:
    status, env = await _post(rig.agent, "/v1/ollama/unload", {"model": "small"})
    assert status == 200 and env["data"]["was_loaded"] is False
    assert rig.ollama.generate_bodies() == []


async def test_unknown_model_is_404(rig: Rig) -> None:
    for method, path, body in (("GET", "/v1/ollama/load-impact?model=nope", None),
                               ("POST", "/v1/ollama/load", {"model": "nope", "force": True}),
                               ("POST", "/v1/ollama/unload", {"model": "nope"})):
        if body is None:
            status, env = await request(rig.agent, method, path)
        else:
            status, env = await _post(rig.agent, path, body)
        assert status == 404 and env["error"]["code"] == "not_found", (path, env)
    assert rig.ollama.generate_bodies() == []


BAD_NAMES = ["", "../etc/passwd", "a b", "llama;rm -rf /", "-llama", "m:", ":tag",
             "a/b/c/d", "ns.dot/model", "m:t:u", "x" * 81, "llama\n3", "m@sha256-abc",
             "h/" + "n" * 81 + "/m"]


async def test_bad_names_are_400_before_any_call(rig: Rig) -> None:
    for name in BAD_NAMES:
        query = urllib.parse.urlencode({"model": name})
        status, env = await request(rig.agent, "GET", f"/v1/ollama/load-impact?{query}")
        assert status == 400 and env["error"]["details"]["field"] == "model", (name, env)
        for path in ("/v1/ollama/load", "/v1/ollama/unload"):
            status, env = await _post(rig.agent, path, {"model": name})
            assert status == 400 and env["error"]["details"]["field"] == "model", (name, env)
    assert rig.ollama.requests == []


async def test_viewer_may_read_but_not_load(rig: Rig) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    status, _ = await request_as(VIEWER_UID, rig.agent, "GET", "/v1/ollama/models")
    assert status == 200
    status, env = await request_as(VIEWER_UID, rig.agent, "POST", "/v1/ollama/load",
                                   json.dumps({"model": "small"}))
    assert status == 403 and env["error"]["code"] == "forbidden"
    assert rig.ollama.generate_bodies() == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_ollama_down_is_503_quickly(short_tmp: Path) -> None:
    agent, _runner, stopper = await _start(short_tmp, f"http://127.0.0.1:{_closed_port()}")
    try:
        for path in ("/v1/ollama/models", "/v1/ollama/loaded",
                     "/v1/ollama/load-impact?model=x"):
            started = time.monotonic()
            status, env = await request(agent, "GET", path)
            assert status == 503, env
            assert env["error"]["code"] == "upstream_unavailable"
            assert env["error"]["details"]["upstream"] == "ollama"
            assert time.monotonic() - started < 2.0
    finally:
        await stopper.stop()


async def test_hanging_ollama_is_504_within_the_timeout(short_tmp: Path) -> None:
    stand_in = OllamaStandIn(models={"small:latest": 1}, hang=True)
    await stand_in.start()
    agent, _runner, stopper = await _start(short_tmp, stand_in.url, timeout_s=1.0)
    try:
        started = time.monotonic()
        status, env = await request(agent, "GET", "/v1/ollama/models")
        elapsed = time.monotonic() - started
        assert status == 504 and env["error"]["code"] == "timeout", env
        assert env["error"]["details"]["upstream"] == "ollama"
        assert 0.9 <= elapsed < 3.0
        assert stand_in.requests  # the call did reach the stand-in
    finally:
        await stopper.stop()
        await stand_in.stop()


async def _cli(agent: Agent, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "--socket", agent.socket_path, "ollama", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli(rig: Rig) -> None:
    code, out, _ = await _cli(rig.agent, "models")
    assert code == 0 and "big:latest" in out and "team/tool:v1.2" in out
    code, out, _ = await _cli(rig.agent, "impact", "big")
    assert code == 2 and out.startswith("CRIT  Loading big:latest")
    code, out, _ = await _cli(rig.agent, "impact", "small")
    assert code == 0 and out.startswith("OK  Loading small:latest")
    code, _, err = await _cli(rig.agent, "load", "big")
    assert code == 2 and "conflict" in err and "swap pressure likely" in err
    code, out, _ = await _cli(rig.agent, "load", "big", "--force")
    assert code == 0 and out.startswith("loaded big:latest (forced)")
    code, out, _ = await _cli(rig.agent, "loaded")
    assert code == 0 and "big:latest" in out and NO_GPU_NOTE in out
    code, out, _ = await _cli(rig.agent, "unload", "big")
    assert code == 0 and out.strip() == "unloaded big:latest"
    assert rig.ollama.generate_bodies()[-1] == {"model": "big:latest", "keep_alive": 0}
