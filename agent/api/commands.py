"""The registry table itself: every command the agent answers (PROTOCOL.md "Commands")."""

from __future__ import annotations

import functools
from typing import Any

from agent.api.handlers import containers, core, io, jobs
from agent.api.handlers import ollama as ollama_handlers
from agent.api.handlers import score as score_handlers
from agent.api.handlers import trend as trend_handlers
from agent.api.openapi import build_openapi
from agent.api.registry import Command, command

COMMANDS: tuple[Command, ...] = (
    command("version", "GET", "/v1/version", "viewer", core.version,
            "agent version, uptime, config path and digest, socket activation"),
    command("openapi", "GET", "/v1/openapi.json", "viewer", core.openapi,
            "this contract, machine-readable (OpenAPI 3.1)"),
    command("health", "GET", "/v1/health", "viewer", core.health,
            "one host sample from the sampler's cache"),
    command("hold.get", "GET", "/v1/hold", "viewer", core.hold_get,
            "the maintenance hold: {active, reason, since, by}"),
    command("hold.set", "PUT", "/v1/hold", "operator", core.hold_set,
            "pause every destructive job until the hold is lifted",
            params=core.HoldParams, mutating=True),
    command("hold.clear", "DELETE", "/v1/hold", "operator", core.hold_clear,
            "lift the maintenance hold", mutating=True),
    command("jobs.list", "GET", "/v1/jobs", "viewer", jobs.jobs,
            "every job: modes, schedule, timer, last run, next run"),
    command("jobs.runs", "GET", "/v1/jobs/{job}/runs", "viewer", jobs.runs,
            "recent run records of one job, newest first", params=jobs.RunsParams),
    command("jobs.run", "POST", "/v1/jobs/{job}/run", "operator", jobs.run,
            "run a job (mode, dry_run, wait); 409 when one is running, 423 under a hold",
            params=jobs.RunParams, mutating=True),
    command("runs.get", "GET", "/v1/runs/{id}", "viewer", jobs.run_record,
            "one run record", params=jobs.RunIdParams),
    command("containers.list", "GET", "/v1/containers", "viewer", containers.list_containers,
            "containers with health, memory use and limit, OOMKilled, watchdog status; "
            "filter=all|unhealthy|no-memory-limit, stack=compose project",
            params=containers.ListParams),
    command("containers.unhealthy", "GET", "/v1/containers/unhealthy", "viewer",
            containers.unhealthy, "unhealthy containers: since, FailingStreak, newest 3 checks"),
    command("containers.logs", "GET", "/v1/containers/{name}/logs", "viewer", containers.logs,
            "last N log lines (default 50, max 500), stdout and stderr, with timestamps",
            params=containers.LogsParams),
    command("containers.health", "GET", "/v1/containers/{name}/health", "viewer",
            containers.health, "the health-check log Docker keeps, newest first",
            params=containers.NameParams),
    command("containers.restart", "POST", "/v1/containers/{name}/restart", "operator",
            containers.restart, "restart one container; 403 protected, 423 hold, 429 over "
            "budget (retry_after_s), 409 a restart of it in progress",
            params=containers.NameParams, mutating=True),
    command("containers.restart_unhealthy", "POST", "/v1/containers/restart-unhealthy",
            "operator", containers.restart_unhealthy,
            "restart every unhealthy, unprotected container; per-container results",
            mutating=True),
    command("io", "GET", "/v1/io", "viewer", io.io,
            "per-container disk writes from cgroups: bytes/s, projected bytes/day, level; "
            "worst first"),
    command("score", "GET", "/v1/score", "viewer", score_handlers.score,
            "VM score card: score 0-100 and dimensions [{name, points, max_points, value, "
            "reason}]"),
    command("ollama.models", "GET", "/v1/ollama/models", "viewer", ollama_handlers.models,
            "Ollama's local models: name, size, modified (UTC), whether loaded"),
    command("ollama.loaded", "GET", "/v1/ollama/loaded", "viewer", ollama_handlers.loaded,
            "loaded models (RAM/VRAM share, expiry UTC, runner CPU and RSS), the RAM bar "
            "and GPU visibility"),
    command("ollama.load_impact", "GET", "/v1/ollama/load-impact", "viewer",
            ollama_handlers.load_impact, "model size vs MemAvailable: predicted free RAM, "
            "level and a warning", params=ollama_handlers.ModelParams),
    command("ollama.load", "POST", "/v1/ollama/load", "operator", ollama_handlers.load,
            "load a model; 409 with the warning when predicted free RAM is under "
            "ollama.free_floor_bytes unless force", params=ollama_handlers.LoadParams,
            mutating=True),
    command("ollama.unload", "POST", "/v1/ollama/unload", "operator", ollama_handlers.unload,
            "unload a model (keep_alive 0)", params=ollama_handlers.ModelParams, mutating=True),
    command("metrics.trend", "GET", "/v1/metrics/trend/{kind}", "viewer", trend_handlers.trend,
            "a named Prometheus trend (kind: disk, memory, steal, containers, io; range: 1h, "
            "24h, 7d, 30d); disk carries the days until the warning threshold",
            params=trend_handlers.TrendParams),
)


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document for :data:`COMMANDS` (built once)."""
    return build_openapi(COMMANDS)
