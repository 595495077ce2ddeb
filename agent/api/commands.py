"""The registry table itself: every command the agent answers (PROTOCOL.md "Commands")."""

from __future__ import annotations

import functools
from typing import Any

from agent.api.handlers import core
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
)


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document for :data:`COMMANDS` (built once)."""
    return build_openapi(COMMANDS)
