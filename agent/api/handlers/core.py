"""Handlers for version, health and the maintenance hold."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import agent
from agent.api.params import ONE_LINE_HINT, ONE_LINE_TEXT, NoParams, param
from agent.api.registry import Call, RawJSON


async def version(call: Call[NoParams]) -> dict[str, Any]:
    """``{version, uptime_s, config_path, config_digest, socket_activated, pid}``."""
    import os

    svc = call.services
    return {
        "version": agent.__version__,
        "uptime_s": round(time.monotonic() - svc.started_monotonic, 3),
        "config_path": svc.config_path,
        "config_digest": svc.config_digest,
        "socket_activated": svc.socket_activated,
        "pid": os.getpid(),
    }


async def health(call: Call[NoParams]) -> RawJSON:
    """The sampler's latest host sample (PROTOCOL.md "Host sample"), encoded once per sample."""
    sample = await call.services.sampler.latest()
    return RawJSON(sample.wire_json)


async def openapi(call: Call[NoParams]) -> dict[str, Any]:
    """The machine-readable contract, generated from the registry."""
    from agent.api.commands import openapi_document

    return openapi_document()


async def hold_get(call: Call[NoParams]) -> dict[str, Any]:
    """``{active, reason, since, by}``."""
    wire: dict[str, Any] = call.services.hold.get().to_wire()
    return wire


@dataclass(frozen=True)
class HoldParams:
    reason: str = param(max_len=500, pattern=ONE_LINE_TEXT, hint=ONE_LINE_HINT)


async def hold_set(call: Call[HoldParams]) -> dict[str, Any]:
    """Activate the hold with a reason (one line, 1-500 characters)."""
    hold = call.services.hold.set(call.params.reason, by=call.peer.describe())
    wire: dict[str, Any] = hold.to_wire()
    return wire


async def hold_clear(call: Call[NoParams]) -> dict[str, Any]:
    """Lift the hold; returns ``{active: false, lifted: <the hold as it was>}``."""
    previous = call.services.hold.clear()
    if previous.active and call.services.watchdog is not None:
        call.services.watchdog.wake("hold lifted")  # restarts the hold deferred happen now
    return {**call.services.hold.get().to_wire(), "lifted": previous.to_wire()}
