"""Handlers for ``/v1/ollama/*``: models, loaded models with RAM/GPU, load impact, load, unload.

Model names are validated at the edge against Ollama's own grammar
(:data:`agent.ollama.MODEL_NAME_PATTERN`), so a bad name is a 400 before any
request reaches Ollama.  Ollama down is 503 ``upstream_unavailable``
(details.upstream ``ollama``), a call past ``ollama.timeout_s`` 504.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from agent.api.params import param
from agent.api.registry import Call
from agent.config import Config
from agent.errors import Conflict, NotFound
from agent.host.meminfo import read_meminfo
from agent.host.model import MemorySample
from agent.ollama import (
    MODEL_NAME_HINT,
    MODEL_NAME_MAX_LEN,
    MODEL_NAME_PATTERN,
    Impact,
    OllamaClient,
    find_model,
    gb,
    impact,
    utc_rfc3339,
)
from agent.ollamahost import gpu, ram_bar, runners


@dataclass(frozen=True)
class ModelParams:
    model: str = param(max_len=MODEL_NAME_MAX_LEN, pattern=MODEL_NAME_PATTERN,
                       hint=MODEL_NAME_HINT)


@dataclass(frozen=True)
class LoadParams:
    model: str = param(max_len=MODEL_NAME_MAX_LEN, pattern=MODEL_NAME_PATTERN,
                       hint=MODEL_NAME_HINT)
    force: bool = param(False)


def _client(cfg: Config) -> OllamaClient:
    return OllamaClient(cfg.ollama.url, cfg.ollama.timeout_s, cfg.ollama.load_timeout_s)


async def _memory(cfg: Config) -> MemorySample:
    return await asyncio.to_thread(read_meminfo, cfg.sampling.proc_root)


async def models(call: Call[Any]) -> list[dict[str, Any]]:
    """``[{name, size_bytes, modified_at, loaded}]`` from ``/api/tags`` and ``/api/ps``;
    ``modified_at`` is UTC RFC 3339."""
    client = _client(call.services.config)
    tags, loaded = await asyncio.gather(client.tags(), client.ps())
    return [{"name": m.get("name"), "size_bytes": int(m.get("size") or 0),
             "modified_at": utc_rfc3339(m.get("modified_at")),
             "loaded": find_model(loaded, str(m.get("name", ""))) is not None} for m in tags]


def _loaded_row(m: dict[str, Any]) -> dict[str, Any]:
    size, vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
    return {"name": m.get("name"), "size_bytes": size, "ram_bytes": max(0, size - vram),
            "vram_bytes": vram, "cpu_percent": None, "rss_bytes": None,
            "expires_at": utc_rfc3339(m.get("expires_at"))}


async def loaded(call: Call[Any]) -> dict[str, Any]:
    """``{models: [{name, size_bytes, ram_bytes, vram_bytes, cpu_percent, rss_bytes,
    expires_at}], ram: {total_bytes, system_used_bytes, models_bytes, free_bytes},
    gpu: {present, devices, note}, runner: {pids, rss_bytes, cpu_percent}}``.

    ram_bytes = size - size_vram.  The runner processes' CPU (percent 0-100 of
    all CPUs, over 0.2 s) and RSS are given to a model only when exactly one
    model is loaded: Ollama's answer does not say which runner holds which
    model; ``runner`` always has the totals.
    """
    cfg = call.services.config
    ps, mem, procs = await asyncio.gather(_client(cfg).ps(), _memory(cfg), runners())
    rows = [_loaded_row(m) for m in ps]
    if len(rows) == 1 and procs.pids:
        rows[0].update(cpu_percent=round(procs.cpu_percent, 1), rss_bytes=procs.rss_bytes)
    models_bytes = sum(r["ram_bytes"] for r in rows)
    return {"models": rows, "ram": ram_bar(mem.total_bytes, mem.available_bytes, models_bytes),
            "gpu": gpu(cfg.ollama.dev_root), "runner": procs.to_wire()}


async def _impact(cfg: Config, model: str) -> tuple[Impact, str]:
    """The impact of loading ``model`` and its name as Ollama lists it; NotFound if unknown."""
    client = _client(cfg)
    tags, ps, mem = await asyncio.gather(client.tags(), client.ps(), _memory(cfg))
    entry = find_model(tags, model)
    if entry is None:
        raise NotFound(f"no Ollama model {model!r} (see GET /v1/ollama/models)")
    name = str(entry.get("name") or model)
    result = impact(name, int(entry.get("size") or 0), mem.available_bytes,
                    warn_free_bytes=cfg.ollama.warn_free_bytes,
                    floor_bytes=cfg.ollama.free_floor_bytes,
                    already_loaded=find_model(ps, model) is not None)
    return result, name


async def load_impact(call: Call[ModelParams]) -> dict[str, Any]:
    """``{model, size_bytes, available_bytes, predicted_free_bytes, level, warning,
    already_loaded}`` (see :func:`agent.ollama.impact`); 404 for an unknown model."""
    result, _ = await _impact(call.services.config, call.params.model)
    return result.to_wire()


async def load(call: Call[LoadParams]) -> dict[str, Any]:
    """Load a model.  409 with the warning when the predicted free RAM is under
    ``ollama.free_floor_bytes`` and ``force`` is false; 404 for an unknown model.
    Returns ``{model, loaded: true, forced, impact, done_reason}``."""
    cfg = call.services.config
    result, name = await _impact(cfg, call.params.model)
    if result.predicted_free_bytes < cfg.ollama.free_floor_bytes and not call.params.force:
        raise Conflict(f"{result.warning}. Refused: under the {gb(cfg.ollama.free_floor_bytes)} "
                       "free-RAM floor (ollama.free_floor_bytes); force loads anyway",
                       {"impact": result.to_wire(), "floor_bytes": cfg.ollama.free_floor_bytes})
    answer = await _client(cfg).load(name)
    return {"model": name, "loaded": True, "forced": call.params.force,
            "impact": result.to_wire(), "done_reason": answer.get("done_reason")}


async def unload(call: Call[ModelParams]) -> dict[str, Any]:
    """Unload a model (``keep_alive`` 0).  404 for a model Ollama does not have; a model
    that is not loaded is left alone.  Returns ``{model, was_loaded, unloaded, done_reason}``."""
    client = _client(call.services.config)
    tags, ps = await asyncio.gather(client.tags(), client.ps())
    entry = find_model(tags, call.params.model) or find_model(ps, call.params.model)
    if entry is None:
        raise NotFound(f"no Ollama model {call.params.model!r} (see GET /v1/ollama/models)")
    name = str(entry.get("name") or call.params.model)
    if find_model(ps, call.params.model) is None:
        return {"model": name, "was_loaded": False, "unloaded": False, "done_reason": None}
    answer = await client.unload(name)
    return {"model": name, "was_loaded": True, "unloaded": True,
            "done_reason": answer.get("done_reason")}
