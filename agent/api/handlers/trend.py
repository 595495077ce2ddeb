"""Handler for ``GET /v1/metrics/trend/{kind}?range=R``: named Prometheus queries only."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from agent import prometheus as prom
from agent.api.params import param
from agent.api.registry import Call
from agent.config import Config
from agent.trend import project

PROJECTION_RANGE_S = prom.RANGES["30d"]


@dataclass(frozen=True)
class TrendParams:
    kind: str = param(choices=prom.KINDS)
    range: str = param("24h", choices=tuple(prom.RANGES))


async def trend(call: Call[TrendParams]) -> dict[str, Any]:
    """``{kind, range, step_s, start, end, series: [{name, points: [[unix_s, v], ...]}],
    projection, note}`` (PROTOCOL.md).

    Units: disk and steal percent 0-100, memory bytes, containers a count, io bytes/s.
    ``projection`` is ``None`` except for disk (:func:`agent.trend.project`, from the
    last 30 days whatever the range).  An empty result is a success with ``series: []``
    and a ``note``.  Raises UpstreamUnavailable (503; also when ``prometheus.url`` is
    empty) and UpstreamTimeout (504) as :mod:`agent.prometheus` maps them.
    """
    return await trend_data(call.services.config, call.params.kind, call.params.range,
                            now=time.time())


async def trend_data(cfg: Config, kind: str, range_name: str, *, now: float) -> dict[str, Any]:
    """What :func:`trend` answers, for ``now`` (Unix seconds); the range ends at ``now``
    rounded down to the step, so repeated charts line up."""
    pc, range_s = cfg.prometheus, prom.RANGES[range_name]
    step = prom.choose_step(range_s)
    end = now // step * step
    queries = prom.trend_queries(kind, step, mounts=tuple(cfg.sampling.disks),
                                 extra=pc.selector)
    series: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        for q in queries:
            result = await prom.query_range(session, pc.url, q.expr, start=end - range_s,
                                            end=end, step_s=step, timeout_s=pc.timeout_s)
            series += prom.series(result, q)
        projection = (await _projection(session, cfg, now) if kind == "disk" else None)
    reply = {"kind": kind, "range": range_name, "step_s": step, "start": end - range_s,
             "end": end, "series": series, "projection": projection}
    if not series:
        reply["note"] = (f"no data: Prometheus at {pc.url} has no {kind} series in the last "
                         f"{range_name}" + (f" matching {pc.selector}" if pc.selector else ""))
    return reply


async def _projection(session: aiohttp.ClientSession, cfg: Config,
                      now: float) -> dict[str, Any]:
    pc, mounts = cfg.prometheus, tuple(cfg.sampling.disks)
    end = now // 3600 * 3600
    result = await prom.query_range(session, pc.url, prom.disk_hourly_max(mounts, pc.selector),
                                    start=end - PROJECTION_RANGE_S, end=end, step_s=3600,
                                    timeout_s=pc.timeout_s)
    hourly = prom.series(result, prom.NamedQuery("", label="mountpoint"))
    return project(hourly, cfg.thresholds.disk_used_percent.warn)
