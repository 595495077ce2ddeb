"""``make bench-report``: issue 7's performance report, every figure from one run on this machine.

``python bench/vmreport.py [--quick] [--json FILE] [--keep]``

1. the tests' own Docker engine (tests/integration/dockerd.py), empty; the
   agent (etc/vm-agent.yaml; ``docker.host`` that engine, cleanup confined
   to it and to temp dirs, see bench/cleanup_bench.py), the minimal aiohttp
   baseline, and our own prometheus-node-exporter on 127.0.0.1 (bench/nodeexp.py);
2. survey cost at 0 containers (bench/survey.py: ``GET /v1/containers``, a
   watchdog pass, the agent's CPU per call);
3. bench/fleet.py's 40 containers (5 unhealthy, opted out of the watchdog):
   the survey again, and issue 3's "health latency while passes run"
   (bench/containers.py);
4. ``GET /v1/health`` agent vs baseline (bench/health.py's rounds, modes
   seq/conn/conc) and ``GET /metrics`` of node_exporter in the same modes;
   answer sizes; memory; idle CPU of the three over the same window; exec to
   ``READY=1`` (bench/health.py);
5. watchdog reaction time (bench/reaction.py);
6. cleanup dry run and real run (bench/cleanup_bench.py);
7. 60 more containers, 100 in all: the survey again.

Prints a table (machine, load average at start and end, every figure with
its unit); ``--json FILE`` writes every figure.  Exit status 0 when every
target of issues 2, 3 and 7 is met, 1 when one is missed, 2 when the bench
itself failed.  Everything started here (engine, containers, agent,
baseline, node_exporter, loaders) is stopped by pid at the end, also on
failure, Ctrl-C or SIGTERM; the temp dir ``/tmp/vmreport-*`` is removed
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common, containers, health, nodeexp, report  # noqa: E402
from bench import containers_report as report3  # noqa: E402
from bench.cleanup_bench import cleanup_phase, cleanup_settings  # noqa: E402
from bench.fleet import CONTAINERS, UNHEALTHY, populate, start_engine  # noqa: E402
from bench.reaction import reaction_phase  # noqa: E402
from bench.servers import spawn_agent, spawn_baseline, started, write_config  # noqa: E402
from bench.survey import survey  # noqa: E402
from bench.vmreport_table import issue7_targets, table  # noqa: E402
from tests.integration.dockerd import CONTAINERD, DOCKERD, TestEngine  # noqa: E402

MANY = 100


def _version(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "-"


def versions(engine: TestEngine) -> dict[str, str]:
    """dockerd, containerd, Engine API, docker CLI and node_exporter versions."""
    engine_version = engine.client().version()
    return {"dockerd": _version([DOCKERD, "--version"]),
            "containerd": _version([CONTAINERD, "--version"]),
            "engine": f"{engine_version.get('Version')} (API {engine_version.get('ApiVersion')})",
            "docker_cli": _version(["docker", "--version"]), "node_exporter": nodeexp.version()}


def agent_config(tmp: Path, host: str, textfile_dir: Path) -> Path:
    """bench/servers.py's config (etc/vm-agent.yaml as shipped, ``docker.host`` set) with
    the metrics textfile in node_exporter's temp folder and the bench's cleanup settings."""
    path = write_config(tmp, host)
    data = yaml.safe_load(path.read_text())
    data["metrics"]["textfile"] = str(textfile_dir / "vm-agent.prom")
    data["cleanup"] |= cleanup_settings(tmp / "cleanup")
    path.write_text(yaml.safe_dump(data))
    return path


def idle_window(pids: dict[str, int], seconds: float) -> dict[str, dict[str, float]]:
    """bench/health.py's idle CPU of every process, over the same ``seconds``."""
    with ThreadPoolExecutor(len(pids)) as pool:
        futures = {name: pool.submit(health.idle_cpu, pid, seconds) for name, pid in pids.items()}
        return {name: f.result() for name, f in futures.items()}


def http_phases(results: dict[str, Any], args: argparse.Namespace, tmp: Path,
                procs: dict[str, Any]) -> None:
    """Agent vs baseline (issue 2), node_exporter's scrape, sizes, memory, idle CPU."""
    agent, base = procs["agent"], procs["baseline"]
    print("HTTP: GET /v1/health agent vs baseline ...", flush=True)
    results["http"] = health.http_phase({"baseline": (tmp / "baseline/baseline.sock", base.pid),
                                         "agent": (tmp / "agent/agent.sock", agent.pid)}, args)
    print("HTTP: node_exporter GET /metrics ...", flush=True)
    results["scrape"] = nodeexp.scrape_phase(procs["address"], procs["node_exporter"].pid, args)
    results["scrape"]["failed_collectors"] = nodeexp.failed_collectors(tmp / "node-exporter")
    results["answer_bytes"] = {
        "baseline": nodeexp.answer_bytes(tmp / "baseline/baseline.sock", "/v1/health"),
        "agent": nodeexp.answer_bytes(tmp / "agent/agent.sock", "/v1/health"),
        "node_exporter": results["scrape"]["bytes"]}
    results["docker_seen"] = health.wait_docker_seen(tmp / "agent/agent.sock", CONTAINERS)
    pids = {"agent": agent.pid, "baseline": base.pid, "node_exporter": procs["node_exporter"].pid}
    results["memory_all"] = {name: common.memory(pid) for name, pid in pids.items()}
    results["memory"] = results["memory_all"]["agent"]
    print(f"idle CPU over {args.idle_s:g} s (agent, baseline, node_exporter) ...", flush=True)
    time.sleep(args.settle_s)
    results["idle_all"] = idle_window(pids, args.idle_s)
    results["idle_cpu"] = results["idle_all"]["agent"]
    results["memory_after_idle"] = {name: common.memory(pid) for name, pid in pids.items()}
    common.stop(base)


def health_with_passes(stack: contextlib.ExitStack, tmp: Path, host: str,
                       args: argparse.Namespace) -> dict[str, Any]:
    """bench/containers.py's health phase (1 round); its control, a second agent (events
    off) whose passes load Docker and the machine but not this agent, is stopped after."""
    config = write_config(tmp, host, watchdog_events=False, name="control.yaml")
    control = started(stack, spawn_agent(config, tmp / "control"), tmp / "control/agent.sock")
    try:
        return containers.health_phase(tmp / "agent/agent.sock", tmp / "control/agent.sock",
                                       1, args.health_requests)
    finally:
        common.stop(control)


def start_all(stack: contextlib.ExitStack, tmp: Path) -> tuple[TestEngine, dict[str, Any]]:
    """The empty engine, node_exporter, the agent and the baseline, each registered on
    ``stack`` for stopping."""
    print("starting the test engine, node_exporter, the agent and the baseline ...", flush=True)
    engine = start_engine(stack, total=0, unhealthy=0)
    textfile = tmp / "textfile"
    textfile.mkdir()
    exporter, address = nodeexp.spawn_node_exporter(tmp / "node-exporter", textfile)
    stack.callback(common.stop, exporter)
    config = agent_config(tmp, engine.host, textfile)
    procs = {"config": config, "node_exporter": exporter, "address": address,
             "agent": started(stack, spawn_agent(config, tmp / "agent"), tmp / "agent/agent.sock"),
             "baseline": started(stack, spawn_baseline(tmp / "baseline"),
                                 tmp / "baseline/baseline.sock")}
    return engine, procs


def run(args: argparse.Namespace, stack: contextlib.ExitStack, tmp: Path) -> dict[str, Any]:
    """Every phase (module docstring); the results dict with ``targets``."""
    results: dict[str, Any] = {"machine": common.machine(), "settings": vars(args).copy()}
    engine, procs = start_all(stack, tmp)
    results["machine"]["versions"] = versions(engine)
    sock, agent_pid, dockerd_pid = tmp / "agent/agent.sock", procs["agent"].pid, engine.pid or 0
    print("survey at 0 containers ...", flush=True)
    results["survey"] = [survey(sock, 0, args.survey_rounds, agent_pid, dockerd_pid)]
    print(f"{CONTAINERS} containers ({UNHEALTHY} unhealthy) ...", flush=True)
    populate(engine, range(CONTAINERS), unhealthy=UNHEALTHY)
    results["survey"].append(survey(sock, CONTAINERS, args.survey_rounds, agent_pid, dockerd_pid))
    print("health latency with and without watchdog passes (issue 3) ...", flush=True)
    results["health_passes"] = health_with_passes(stack, tmp, engine.host, args)
    http_phases(results, args, tmp, procs)
    print(f"exec to READY=1 x {args.ready_runs} ...", flush=True)
    results["ready"] = health.ready_phase(procs["config"], tmp, args.ready_runs)
    print(f"watchdog reaction x {args.reaction_trials} ...", flush=True)
    results["reaction"] = reaction_phase(engine, tmp / "agent", args.reaction_trials)
    print("cleanup: dry run, real run ...", flush=True)
    results["cleanup"] = cleanup_phase(engine, sock, tmp / "cleanup/retention")
    print(f"{MANY} containers ...", flush=True)
    populate(engine, range(CONTAINERS, MANY), unhealthy=UNHEALTHY)
    results["survey"].append(survey(sock, MANY, args.survey_rounds, agent_pid, dockerd_pid))
    results["machine"]["loadavg_end"] = common.loadavg()
    results["targets"] = targets(results)
    return results


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 2's targets (bench/report.py), issue 3's at 40 containers
    (bench/containers_report.py) and issue 7's own, each tagged with its issue."""
    at40 = next(s for s in results["survey"] if s["containers"] == CONTAINERS)
    issue3 = report3.targets({"health": results["health_passes"], "passes": at40["passes"],
                              "list": at40["list"]})
    tagged = [(2, report.targets(results)), (3, issue3), (7, issue7_targets(results))]
    return [t | {"issue": issue} for issue, group in tagged for t in group]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/vmreport.py", description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    p.add_argument("--quick", action="store_true",
                   help="shorter run: bench/health.py's --quick, 10 survey calls, 3 trials")
    p.add_argument("--survey-rounds", type=int, default=30, help="list calls and passes per count")
    p.add_argument("--health-requests", type=int, default=10000,
                   help="health requests with/without passes (issue 3)")
    p.add_argument("--scrape-requests", type=int, default=300, help="counted /metrics requests")
    p.add_argument("--scrape-warmup", type=int, default=30, help="uncounted /metrics requests")
    p.add_argument("--reaction-trials", type=int, default=5, help="containers made to fail")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Our arguments over bench/health.py's (its defaults, or its ``--quick`` ones)."""
    args = _parser().parse_args(argv)
    base = health.parse_args(["--quick"] if args.quick else [])
    if args.quick:
        args.survey_rounds, args.health_requests, args.reaction_trials = 10, 3000, 3
        args.scrape_requests, args.scrape_warmup = 100, 10
    return argparse.Namespace(**(vars(base) | vars(args)))


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write ``--json``; 0 all met, 1 a target missed, 2 failure."""
    return common.bench_main(parse_args(argv), run, table, prefix="vmreport-")


if __name__ == "__main__":
    sys.exit(main())
