"""Issue 3's speed check: a watchdog pass, the container list and health latency, via the agent.

``python bench/containers.py [--rounds 30] [--health-requests 20000] [--json FILE]``

1. the tests' own Docker engine with 40 running containers, 5 unhealthy
   (bench/fleet.py: the unhealthy ones are opted out of the watchdog by
   label, so every pass inspects and decides on them but restarts nothing);
2. the real agent (``vm-agent serve``, etc/vm-agent.yaml, event stream on)
   on its own Unix socket, as root (uid 0 is operator);
3. through the real protocol, each timed by the client (a new connection per
   call): ``GET /v1/containers`` and ``POST /v1/jobs/watchdog/run``
   ``{"wait": true}`` (one full pass as a recorded job; the pass's own time
   is its step's ``duration_s``), ``--rounds`` times each;
4. ``GET /v1/health`` p50/p99 (bench/loadgen.py ``seq``, a separate process,
   one keep-alive connection) with no pass running, while a thread here
   runs watchdog passes back to back on the same agent, and (a control)
   while that thread runs them on a second agent on the same engine;
   alternated ``--health-rounds`` times, the median round reported;
5. ``GET /v1/containers`` on that second agent, which has ``watchdog.events:
   false`` (no inspect cache: every container inspected each time);
6. ``docker ps --filter health=unhealthy`` on the same engine, for comparison.

Exit status 0 when every target is met, 1 when one is
missed, 2 when the bench itself failed (targets and table:
bench/containers_report.py).  Everything started here is stopped
by pid at the end, also on failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.containers_report import table, targets  # noqa: E402
from bench.fleet import CONTAINERS, UNHEALTHY, start_engine  # noqa: E402
from bench.servers import spawn_agent, started, write_config  # noqa: E402

PASS = ("POST", "/v1/jobs/watchdog/run", {"wait": True})
LIST = ("GET", "/v1/containers", None)


def call(sock: Path, method: str, path: str, body: Any) -> tuple[float, Any]:
    """One request; (client seconds, data).  RuntimeError unless 200 ``ok``."""
    t0 = time.perf_counter()
    status, answer = common.request_json(str(sock), method, path, body, timeout_s=60.0)
    took = time.perf_counter() - t0
    if status != 200 or not answer.get("ok"):
        raise RuntimeError(f"{method} {path}: {status} {answer}")
    return took, answer["data"]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """``{n, p50_ms, p95_ms, max_ms}`` (nearest rank) of durations in seconds."""
    ms = sorted(s * 1000 for s in seconds)
    return {"n": len(ms), "p50_ms": common.percentile(ms, 50),
            "p95_ms": common.percentile(ms, 95), "max_ms": ms[-1]}


def list_phase(sock: Path, rounds: int) -> dict[str, Any]:
    """``GET /v1/containers`` ``rounds`` times after one warm-up; timings and row counts.

    RuntimeError unless every answer lists every container and the unhealthy ones."""
    call(sock, *LIST)
    each = [call(sock, *LIST) for _ in range(rounds)]
    rows = {len(data) for _, data in each}
    unhealthy = {sum(r["health"] == "unhealthy" for r in data) for _, data in each}
    if rows != {CONTAINERS} or unhealthy != {UNHEALTHY}:
        raise RuntimeError(f"GET /v1/containers: {rows} rows, {unhealthy} unhealthy")
    return {**summary_ms([t for t, _ in each]), "rows": sorted(rows),
            "unhealthy_rows": sorted(unhealthy)}


def one_pass(sock: Path) -> dict[str, Any]:
    """One watchdog job run; client seconds, the pass's seconds, its status and detail."""
    took, record = call(sock, *PASS)
    step = record["steps"][0]
    return {"client_s": took, "pass_s": float(step["duration_s"]), "status": record["status"],
            "detail": step.get("detail")}


def _cpu(agent_pid: int, dockerd_pid: int) -> dict[str, float]:
    return {"agent": common.cpu_seconds(agent_pid),
            "agent_loop_thread": common.cpu_seconds(agent_pid, tid=agent_pid),
            "dockerd": common.cpu_seconds(dockerd_pid)}


def pass_phase(sock: Path, rounds: int, agent_pid: int, dockerd_pid: int) -> dict[str, Any]:
    """``rounds`` passes one after the other (after one warm-up); timings, CPU ms per pass
    of the agent (all threads, and its event-loop thread alone) and of dockerd."""
    one_pass(sock)
    cpu0 = _cpu(agent_pid, dockerd_pid)
    each = [one_pass(sock) for _ in range(rounds)]
    cpu1 = _cpu(agent_pid, dockerd_pid)
    return {"client": summary_ms([p["client_s"] for p in each]),
            "pass": summary_ms([p["pass_s"] for p in each]),
            "cpu_ms_per_pass": {k: (cpu1[k] - cpu0[k]) / rounds * 1000 for k in cpu0},
            "statuses": sorted({p["status"] for p in each}), "detail": each[-1]["detail"]}


class PassDriver(threading.Thread):
    """Runs watchdog passes back to back until :meth:`finish`; counts them and their time."""

    def __init__(self, sock: Path) -> None:
        super().__init__(daemon=True)
        self.sock, self.stop_flag = sock, threading.Event()
        self.passes, self.busy_s, self.error = 0, 0.0, ""

    def run(self) -> None:
        try:
            while not self.stop_flag.is_set():
                self.busy_s += one_pass(self.sock)["client_s"]
                self.passes += 1
        except Exception as exc:  # reported by finish(), never lost
            self.error = repr(exc)

    def finish(self) -> dict[str, Any]:
        """Stop after the running pass; ``{passes, busy_s}``.  RuntimeError if one failed."""
        self.stop_flag.set()
        self.join(120)
        if self.error or self.is_alive():
            raise RuntimeError(f"pass driver: {self.error or 'still running after 120 s'}")
        return {"passes": self.passes, "busy_s": self.busy_s}


def health_seq(sock: Path, requests: int) -> dict[str, Any]:
    """bench/loadgen.py ``seq`` on ``GET /v1/health``: p50/p99 ms, wall seconds, errors."""
    argv = [sys.executable, "-m", "bench.loadgen", "--socket", str(sock), "--mode", "seq",
            "--requests", str(requests), "--warmup", "500", "--max-seconds", "120"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=150, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen: {done.stderr.decode().strip()}")
    raw = json.loads(done.stdout)
    out = common.latency_summary(raw["latencies_ns"])
    return out | {"wall_s": raw["loader_wall_s"], "errors": raw["errors"]}


def health_during_passes(sock: Path, requests: int, *,
                         driven: Path | None = None) -> dict[str, Any]:
    """Health latency on ``sock`` while passes run back to back on ``driven`` (default: the
    same agent); ``busy_share`` = pass time / wall."""
    driver = PassDriver(driven or sock)
    driver.start()
    time.sleep(0.05)  # the first pass is under way
    health = health_seq(sock, requests)
    passes = driver.finish()
    return health | passes | {"busy_share": min(1.0, passes["busy_s"] / health["wall_s"])}


HEALTH_SIDES = ("idle", "passes", "other_passes")


def health_phase(sock: Path, other: Path, rounds: int, requests: int) -> dict[str, Any]:
    """``rounds`` alternations of (no pass, this agent's passes running, the ``other``
    agent's passes running); every round and the medians.

    The third is a control: the same Docker and client load on the machine,
    but not on this agent's event loop.  What it adds over "no pass" is the
    machine's share; what "passes" adds over it is the agent's own.
    """
    each = []
    for index in range(rounds):
        one = {"idle": health_seq(sock, requests),
               "passes": health_during_passes(sock, requests),
               "other_passes": health_during_passes(sock, requests, driven=other)}
        each.append(one)
        print(f"  round {index + 1}/{rounds}: health p50/p99 ms: no pass "
              + ", ".join(f"{one[k]['p50_ms']:.3f}/{one[k]['p99_ms']:.3f}" + label
                          for k, label in (("idle", ""), ("passes", " passes running"),
                                           ("other_passes", " the other agent's passes")))
              + f" ({one['passes']['passes']}, {one['other_passes']['passes']} passes)",
              flush=True)
    median = {side: {k: statistics.median(r[side][k] for r in each)
                     for k in ("p50_ms", "p99_ms", "max_ms")} for side in HEALTH_SIDES}
    return {"rounds": each, "median": median}


def docker_ps(host: str, rounds: int) -> dict[str, Any]:
    """``docker -H host ps --filter health=unhealthy`` ``rounds`` times; timings, lines."""
    cli = shutil.which("docker")
    if cli is None:
        return {"error": "no docker CLI installed"}
    argv = [cli, "-H", host, "ps", "--filter", "health=unhealthy", "--format", "{{.Names}}"]
    subprocess.run(argv, check=True, capture_output=True, timeout=30)
    times, names = [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        done = subprocess.run(argv, check=True, capture_output=True, timeout=30)
        times.append(time.perf_counter() - t0)
        names = len(done.stdout.split())
    version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=False)
    return {**summary_ms(times), "unhealthy_listed": names, "cli": version.stdout.strip()}


def wait_seen(sock: Path, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll the agent's health until its docker part counts every container."""
    deadline = time.monotonic() + timeout_s
    while (docker := common.get_json(str(sock), "/v1/health")["data"]["docker"]).get(
            "containers_total") != CONTAINERS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"agent's docker sample after {timeout_s:g} s: {docker}")
        time.sleep(0.5)
    return dict(docker)


# -- main ----------------------------------------------------------------------------

def _cold_agent(stack: contextlib.ExitStack, tmp: Path,
                host: str) -> tuple[subprocess.Popen[bytes], Path]:
    """A second agent without the event stream (no inspect cache): the health control's
    pass driver, then the cold list.  Its process and socket."""
    config = write_config(tmp, host, watchdog_events=False, name="no-events.yaml")
    sock = tmp / "cold/agent.sock"
    agent = started(stack, spawn_agent(config, tmp / "cold"), sock)
    wait_seen(sock)
    one_pass(sock)
    return agent, sock


def run(args: argparse.Namespace, stack: contextlib.ExitStack, tmp: Path) -> dict[str, Any]:
    """Every phase; the results dict."""
    results: dict[str, Any] = {"machine": common.machine(), "settings": vars(args).copy()}
    print(f"starting the test engine and {CONTAINERS} containers ...", flush=True)
    engine = start_engine(stack)
    host, sock = engine.host, tmp / "agent/agent.sock"
    agent = started(stack, spawn_agent(write_config(tmp, host), tmp / "agent"), sock)
    results["docker_seen"] = wait_seen(sock)
    time.sleep(2.0)  # the agent's first pass (1 s after start) and event stream are done
    print(f"GET /v1/containers and watchdog passes x {args.rounds} ...", flush=True)
    results["list"] = list_phase(sock, args.rounds)
    results["passes"] = pass_phase(sock, args.rounds, agent.pid, engine.pid or 0)
    cold, cold_sock = _cold_agent(stack, tmp, host)
    print("GET /v1/health with and without passes ...", flush=True)
    results["health"] = health_phase(sock, cold_sock, args.health_rounds, args.health_requests)
    results["memory"] = common.memory(agent.pid)
    results["list_cold"] = list_phase(cold_sock, args.rounds)
    common.stop(cold)
    results["docker_ps"] = docker_ps(host, args.rounds)
    results["machine"]["loadavg_end"] = common.loadavg()
    results["targets"] = targets(results)
    return results


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/containers.py", description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    p.add_argument("--rounds", type=int, default=30, help="timed calls of each kind")
    p.add_argument("--health-rounds", type=int, default=3, help="no-pass/passes alternations")
    p.add_argument("--health-requests", type=int, default=20000,
                   help="counted sequential health requests per measurement")
    p.add_argument("--quick", action="store_true", help="10 calls, 1 round of 5000 requests")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write ``--json``; 0 all met, 1 a target missed, 2 failure."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.rounds, args.health_rounds, args.health_requests = 10, 1, 5000
    return common.bench_main(args, run, table, prefix="vmbench-ct-")


if __name__ == "__main__":
    sys.exit(main())
