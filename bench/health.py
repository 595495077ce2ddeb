"""``make bench``: vm-agent's speed and memory against a minimal aiohttp server, in one run.

Phases (every loop bounded in count and time; every process and the engine
started here are stopped by pid at the end, also on failure or Ctrl-C):

1. the tests' own Docker engine (tests/integration/dockerd.py) with 40
   ``--network none`` busybox containers running ``sleep 3600`` with a
   HEALTHCHECK, 5 of them failing it and opted out of the watchdog
   (bench/fleet.py; skipped with ``--no-docker``);
2. the real agent (``vm-agent serve``, etc/vm-agent.yaml with ``docker.host``
   pointed at that engine) and the baseline (bench/baseline_server.py), each
   on its own Unix socket;
3. HTTP ``GET /v1/health``, measured by bench/loadgen.py in a separate
   process, alternating baseline and agent for ``--rounds`` rounds (the
   median round is reported): sequential keep-alive, a new connection per
   request, 32 concurrent keep-alive clients;
4. the agent's memory (VmRSS, VmHWM, psutil rss/uss) once it sees the 40
   containers; its CPU while idle over ``--idle-s`` seconds;
5. exec to ``READY=1``: fresh agents with ``NOTIFY_SOCKET`` on a datagram
   socket bound here.

Prints a table; ``--json FILE`` writes every figure.  Exit status 0 when all
targets are met, 1 when one is missed, 2 when the bench itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common, report  # noqa: E402
from bench.fleet import CONTAINERS, start_engine  # noqa: E402
from bench.servers import spawn_agent, spawn_baseline, started, write_config  # noqa: E402

MODES = ("seq", "conn", "conc")


# -- HTTP -------------------------------------------------------------------------------

def loadgen(sock: Path, mode: str, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    """One bench/loadgen.py run against ``sock``; its result plus the server's CPU per request."""
    return run_loader("bench.loadgen", ["--socket", str(sock)], mode,
                      (args.requests, args.warmup), args, server_pid)


def run_loader(module: str, target: list[str], mode: str, counts: tuple[int, int],
               args: Any, server_pid: int) -> dict[str, Any]:
    """Run loader ``module`` (bench.loadgen's options) at ``target`` in ``mode`` with
    ``counts`` = (counted, warm-up) requests; its summary plus the server's CPU
    (``server_cpu_s``, ``server_cpu_us_per_request``).  RuntimeError when the loader fails."""
    argv = [sys.executable, "-m", module, *target, "--mode", mode,
            "--requests", str(counts[0]), "--warmup", str(counts[1]),
            "--clients", str(args.clients), "--duration-s", str(args.duration_s),
            "--max-seconds", "120"]
    cpu0 = common.cpu_seconds(server_pid)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=150, check=False)
    server_cpu = common.cpu_seconds(server_pid) - cpu0
    if done.returncode != 0:
        raise RuntimeError(f"{module} {mode} on {target}: {done.stderr.decode().strip()}")
    raw = json.loads(done.stdout)
    result = {k: v for k, v in raw.items() if k != "latencies_ns"}
    result |= common.latency_summary(raw["latencies_ns"])
    result["server_cpu_s"] = server_cpu
    result["server_cpu_us_per_request"] = server_cpu / raw["requests_total"] * 1e6
    return result


def http_phase(servers: dict[str, tuple[Path, int]], args: argparse.Namespace,
               ) -> dict[str, Any]:
    """``--rounds`` rounds of every mode, baseline then agent; per-round results and medians."""
    rounds: list[dict[str, dict[str, Any]]] = []
    for index in range(args.rounds):
        one: dict[str, dict[str, Any]] = {name: {} for name in servers}
        for mode in MODES:
            for name, (sock, pid) in servers.items():
                one[name][mode] = loadgen(sock, mode, args, pid)
        rounds.append(one)
        print(f"  round {index + 1}/{args.rounds}: " + report.round_line(one), flush=True)
    return {"rounds": rounds, "median": _medians(rounds)}


def _medians(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    keys = ("p50_ms", "p99_ms", "mean_ms", "throughput_rps", "server_cpu_us_per_request",
            "loader_cpu_s", "errors")
    out: dict[str, dict[str, Any]] = {}
    for name in rounds[0]:
        out[name] = {mode: {k: statistics.median(r[name][mode][k] for r in rounds)
                            for k in keys if k in rounds[0][name][mode]} for mode in MODES}
    return out


# -- the agent alone --------------------------------------------------------------------

def wait_docker_seen(sock: Path, want_total: int | None,
                     timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll the agent's health until its docker part counts ``want_total`` containers.

    ``None``: the first docker part, whatever it says (``--no-docker``).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        docker = common.get_json(str(sock), "/v1/health")["data"]["docker"]
        if want_total is None or (docker.get("available")
                                  and docker.get("containers_total") == want_total):
            return dict(docker)
        if time.monotonic() > deadline:
            raise RuntimeError(f"agent's docker sample after {timeout_s:g} s: {docker}")
        time.sleep(0.5)


def idle_cpu(pid: int, seconds: float) -> dict[str, float]:
    """The agent's CPU (utime + stime, all threads) over ``seconds`` of no requests."""
    cpu0, wall0 = common.cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu, wall = common.cpu_seconds(pid) - cpu0, time.monotonic() - wall0
    return {"seconds": wall, "cpu_s": cpu, "percent_of_one_core": cpu / wall * 100}


def _await_ready(notify: socket.socket, proc: subprocess.Popen[bytes],
                 deadline: float) -> list[str]:
    messages: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        notify.settimeout(max(0.01, deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            messages.append(notify.recv(4096).decode(errors="replace"))
            if "READY=1" in messages[-1].splitlines():
                return messages
    raise RuntimeError(f"no READY=1 (exit {proc.poll()}), got {messages}")


def ready_once(config: Path, work: Path) -> dict[str, Any]:
    """Seconds from just before exec to READY=1 on our NOTIFY_SOCKET; answers after it?"""
    work.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(work / "notify.sock"))
        t0 = time.perf_counter()
        proc = spawn_agent(config, work, NOTIFY_SOCKET=str(work / "notify.sock"))
        try:
            _await_ready(notify, proc, time.monotonic() + 10.0)
            seconds = time.perf_counter() - t0
            answered = common.get_json(str(work / "agent.sock"), "/v1/version").get("ok")
        finally:
            code = common.stop(proc)
    return {"seconds": seconds, "answered_after_ready": bool(answered), "exit_code": code}


def ready_phase(config: Path, tmp: Path, runs: int) -> dict[str, Any]:
    """``runs`` fresh agents; median and max exec-to-READY seconds."""
    each = [ready_once(config, tmp / f"ready-{i}") for i in range(runs)]
    times = [r["seconds"] for r in each]
    return {"runs": each, "median_s": statistics.median(times), "max_s": max(times)}


# -- main -------------------------------------------------------------------------------

def run(args: argparse.Namespace, stack: contextlib.ExitStack, tmp: Path) -> dict[str, Any]:
    """Every phase; the results dict (see :mod:`bench.report` for the targets)."""
    results: dict[str, Any] = {"machine": common.machine(), "settings": vars(args).copy()}
    total = None if args.no_docker else CONTAINERS
    if args.no_docker:
        host = f"unix://{tmp}/no-docker.sock"
    else:
        print(f"starting the test engine and {CONTAINERS} containers ...", flush=True)
        host = start_engine(stack).host
    config = write_config(tmp, host)
    base = started(stack, spawn_baseline(tmp / "baseline"), tmp / "baseline/baseline.sock")
    agent = started(stack, spawn_agent(config, tmp / "agent"), tmp / "agent/agent.sock")
    results["docker_seen"] = wait_docker_seen(tmp / "agent/agent.sock", total)
    print("HTTP GET /v1/health ...", flush=True)
    results["http"] = http_phase({"baseline": (tmp / "baseline/baseline.sock", base.pid),
                                  "agent": (tmp / "agent/agent.sock", agent.pid)}, args)
    common.stop(base)
    results["memory"] = common.memory(agent.pid)
    print(f"agent idle CPU over {args.idle_s:g} s ...", flush=True)
    time.sleep(args.settle_s)
    results["idle_cpu"] = idle_cpu(agent.pid, args.idle_s)
    results["memory_after_idle"] = common.memory(agent.pid)
    results["agent_exit_code"] = common.stop(agent)
    print(f"exec to READY=1 x {args.ready_runs} ...", flush=True)
    results["ready"] = ready_phase(config, tmp, args.ready_runs)
    results["machine"]["loadavg_end"] = common.loadavg()
    results["targets"] = report.targets(results)
    return results


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/health.py", description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    p.add_argument("--quick", action="store_true",
                   help="short run for development: 500 requests, 2 s, 1 round, 10 s idle")
    p.add_argument("--requests", type=int, default=2000, help="counted sequential requests")
    p.add_argument("--warmup", type=int, default=200, help="uncounted requests before them")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--duration-s", type=float, default=5.0, help="counted concurrent seconds")
    p.add_argument("--rounds", type=int, default=3, help="baseline/agent alternations")
    p.add_argument("--idle-s", type=float, default=60.0, help="idle CPU window, seconds")
    p.add_argument("--settle-s", type=float, default=5.0, help="pause before the idle window")
    p.add_argument("--ready-runs", type=int, default=5, help="exec-to-READY repetitions")
    p.add_argument("--no-docker", action="store_true",
                   help="no test engine (no root needed); memory/idle without containers")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Arguments, with ``--quick`` applied over the defaults."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.requests, args.warmup, args.duration_s = 500, 100, 2.0
        args.rounds, args.idle_s, args.settle_s, args.ready_runs = 1, 10.0, 1.0, 3
    return args


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write ``--json``; 0 all met, 1 a target missed, 2 failure."""
    args = parse_args(argv)
    return common.bench_main(args, run, report.table, prefix="vmbench-")


if __name__ == "__main__":
    sys.exit(main())
