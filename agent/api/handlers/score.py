"""Handler for ``GET /v1/score``: the VM score card (agent/score.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent.api.params import NoParams
from agent.api.registry import Call
from agent.score import last_successful_cleanup, score_card


async def score(call: Call[NoParams]) -> dict[str, Any]:
    """``{score, dimensions: [{name, points, max_points, value, reason}]}`` (PROTOCOL.md).

    From the sampler's cached host sample and the last successful cleanup run
    record; with no job runner (no run history), maintenance hygiene scores 0
    and says so.  Raises what ``sampler.latest()`` raises (503 without a sample).
    """
    svc = call.services
    sample = await svc.sampler.latest()
    cleanup = None
    if svc.jobs is not None:
        cleanup = await asyncio.to_thread(last_successful_cleanup, svc.jobs.records)
    return score_card(sample, cleanup, time.time()).to_wire()
