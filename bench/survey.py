"""Survey cost at a given number of running containers: the list and a watchdog pass.

Through the agent's socket, a new connection per call (bench/containers.py's
``call``): ``GET /v1/containers`` and ``POST /v1/jobs/watchdog/run``
``{"wait": true}`` (bench/containers.py's ``pass_phase``), with the agent's
CPU per call.  bench/vmreport.py runs it at 0, 40 and 100 containers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import common
from bench.containers import LIST, call, pass_phase, summary_ms
from bench.health import wait_docker_seen


def list_timings(sock: Path, rounds: int, agent_pid: int, rows: int) -> dict[str, Any]:
    """``GET /v1/containers`` ``rounds`` times after one warm-up: client ms and the agent's
    CPU ms per call (all threads).  RuntimeError unless every answer has ``rows`` rows."""
    call(sock, *LIST)
    cpu0 = common.cpu_seconds(agent_pid)
    each = [call(sock, *LIST) for _ in range(rounds)]
    cpu = common.cpu_seconds(agent_pid) - cpu0
    seen = {len(data) for _, data in each}
    if seen != {rows}:
        raise RuntimeError(f"GET /v1/containers: {sorted(seen)} rows, expected {rows}")
    return summary_ms([t for t, _ in each]) | {"rows": rows,
                                                "agent_cpu_ms_per_call": cpu / rounds * 1000}


def survey(sock: Path, containers: int, rounds: int, agent_pid: int,
           dockerd_pid: int) -> dict[str, Any]:
    """Wait until the agent counts ``containers``, then the list and the passes."""
    seen = wait_docker_seen(sock, containers)
    return {"containers": containers, "running": seen.get("running"),
            "list": list_timings(sock, rounds, agent_pid, containers),
            "passes": pass_phase(sock, rounds, agent_pid, dockerd_pid)}
