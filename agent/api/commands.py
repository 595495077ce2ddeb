"""The registry table itself: every command the agent answers (PROTOCOL.md "Commands")."""

from __future__ import annotations

import functools
from typing import Any

from agent.api.handlers import containers, core, io, jobs
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
            "budget (retry_after_s)", params=containers.NameParams, mutating=True),
    command("containers.restart_unhealthy", "POST", "/v1/containers/restart-unhealthy",
            "operator", containers.restart_unhealthy,
            "restart every unhealthy, unprotected container; per-container results",
            mutating=True),
    command("io", "GET", "/v1/io", "viewer", io.io,
            "per-container disk writes from cgroups: bytes/s, projected bytes/day, level; "
            "worst first"),
)


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document for :data:`COMMANDS` (built once)."""
    return build_openapi(COMMANDS)
