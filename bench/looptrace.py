"""Where the agent's event loop spends its time during an API-run watchdog pass.

``python bench/looptrace.py [--passes 300] [--json FILE]``

Issue 3 asks that ``GET /v1/health`` latency not move while a pass runs.
bench/containers.py measures that; this script explains its figure.  It
starts the tests' own engine with bench/fleet.py's 40 containers (5
unhealthy, opted out), the real agent with a tracing hook (the agent's own
entry point, run by ``python -m bench.looptrace --agent ...``: every asyncio
callback's thread CPU time is recorded while SIGUSR1 has switched it on),
runs ``--passes`` passes one after the other through ``POST
/v1/jobs/watchdog/run`` (a new connection each, as ``vm-agentctl run
watchdog`` and the timer do), and prints the loop's CPU per pass by part:

- ``request``: accepting the job's connection, parsing it, the handler,
  writing the answer, the audit flush (any request costs these);
- ``runner``: the job runner's record keeping and disk figures;
- ``pass``: the watchdog pass itself (list, decide, act, audit);
- ``hops``: waking up after worker-thread calls and futures (shared);
- ``other``: socket reads not tied to one of the above, timers.

and how many callbacks per pass ran longer than 50 and 100 µs (a health
request that arrives meanwhile waits for the rest of them).  It also
measures what a separate pass process would cost in memory: the VmRSS of a
Python that imports only what a pass needs (aiodocker, sqlite3, the watchdog).

The hook adds about 2 µs per callback; figures are for comparison between
parts, not absolute.  Nothing is asserted: exit 0 when it ran, 2 when it failed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PARTS = ("request", "runner", "pass", "hops", "other")
_PASS_FRAMES = ("watchdog_pass", "observe", "_execute_all", "bounded", "containers", "_list")
_REQUEST = ("RequestHandler", "_accept_connection", "GuardedConnection", "Auditor.flush",
            "_call_connection_lost", "_add_reader")
_HOPS = ("to_thread", "_chain_future", "_read_from_self", "gather", "_wait", "shield",
         "_retrieve", "_set_result_unless_cancelled")


# -- the hook, inside the agent process --------------------------------------------

def _stack(task: asyncio.Task[Any]) -> str:
    """``name:line>name:line`` of the coroutines ``task`` is suspended in, outermost first."""
    coro: Any = task.get_coro()
    names = []
    while coro is not None and len(names) < 16:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        names.append(frame.f_code.co_name)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return ">".join(names)


def part_of(callback: str, task_name: str, frames: str) -> str:
    """The part (one of :data:`PARTS`) a callback belongs to, from its repr, its task's
    coroutine name and the frames the task was suspended in before and after."""
    if task_name.startswith("JobRunner") or task_name.startswith("_execute_all"):
        return "pass" if any(f in frames for f in _PASS_FRAMES) else "runner"
    if task_name.startswith("DiskReader"):
        return "runner"
    if any(r in task_name or r in callback for r in _REQUEST):
        return "request"
    if any(h in task_name or h in callback for h in _HOPS):
        return "hops"
    return "other"


class Recorder:
    """Wraps ``asyncio.Handle._run``; SIGUSR1 switches recording on, and off again,
    writing ``{part: [count, cpu_ns, over_50us, over_100us]}`` and the callback count
    to ``out``."""

    def __init__(self, out: Path) -> None:
        self.out, self.on = out, False
        self.parts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0])
        self.longest: list[tuple[int, str]] = []

    def install(self) -> None:
        original = asyncio.events.Handle._run
        recorder = self

        def _run(handle: asyncio.Handle) -> None:
            if not recorder.on:
                return original(handle)
            recorder.one(handle, original)
            return None

        asyncio.events.Handle._run = _run  # type: ignore[method-assign]
        signal.signal(signal.SIGUSR1, lambda *_: self.toggle())

    def one(self, handle: asyncio.Handle, original: Any) -> None:
        callback = handle._callback  # type: ignore[attr-defined]
        task = getattr(callback, "__self__", None)
        is_task = isinstance(task, asyncio.Task)
        before = _stack(task) if is_task else ""
        t0 = time.thread_time_ns()
        try:
            original(handle)
        finally:
            took = time.thread_time_ns() - t0
            after = _stack(task) if is_task and not task.done() else ""
            name = task.get_coro().__qualname__ if is_task else ""  # type: ignore[union-attr]
            part = part_of(repr(callback)[:120], name, before + "|" + after)
            row = self.parts[part]
            row[0] += 1
            row[1] += took
            row[2] += took > 50_000
            row[3] += took > 100_000
            if took > 100_000:
                self.longest.append((took, f"{part}: {name or repr(callback)[:60]} "
                                           f"{before} => {after}"))

    def toggle(self) -> None:
        self.on = not self.on
        if self.on:
            self.parts.clear()
            self.longest.clear()
            return
        top = collections.Counter(label for _, label in self.longest)
        self.out.write_text(json.dumps({"parts": dict(self.parts),
                                        "longest": top.most_common(12)}))


def agent_main(argv: list[str]) -> int:
    """The agent (``agent.daemon.main``) with the recorder installed; LOOPTRACE_OUT names
    the output file."""
    Recorder(Path(os.environ["LOOPTRACE_OUT"])).install()
    from agent.daemon import main
    return main(argv)


# -- the driver -----------------------------------------------------------------------

def pass_process_rss_kb() -> int:
    """VmRSS (kB) of a Python that imports only what a watchdog pass needs."""
    code = ("import aiodocker, sqlite3, agent.containers.watchdog_run, agent.containers.inventory\n"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=60)
    return int(done.stdout.strip())


def _spawn(config: Path, work: Path, out: Path) -> subprocess.Popen[bytes]:
    from bench.servers import _env
    work.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bench.looptrace", "--agent", "serve", "--config",
            str(config), "--socket", str(work / "agent.sock"), "--state-dir", str(work),
            "--run-dir", str(work)]
    with open(work / "agent.log", "ab") as log:
        return subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, env=_env(LOOPTRACE_OUT=str(out)),
                                start_new_session=True)


def run(args: argparse.Namespace, stack: contextlib.ExitStack[Any], tmp: Path) -> dict[str, Any]:
    """Trace ``args.passes`` passes; the results dict."""
    from bench import common
    from bench.containers import one_pass, wait_seen
    from bench.fleet import start_engine
    from bench.servers import started, write_config
    print("starting the test engine and its containers ...", flush=True)
    engine = start_engine(stack)
    out, sock = tmp / "trace.json", tmp / "agent/agent.sock"
    agent = started(stack, _spawn(write_config(tmp, engine.host), tmp / "agent", out), sock)
    wait_seen(sock)
    time.sleep(2.0)
    for _ in range(20):
        one_pass(sock)
    os.kill(agent.pid, signal.SIGUSR1)
    t0 = time.perf_counter()
    passes = [one_pass(sock) for _ in range(args.passes)]
    wall = time.perf_counter() - t0
    os.kill(agent.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    trace = json.loads(out.read_text())
    return {"machine": common.machine(), "passes": args.passes, "wall_s": wall,
            "pass_s_mean": sum(p["pass_s"] for p in passes) / len(passes),
            "parts": trace["parts"], "longest": trace["longest"],
            "pass_process_rss_kb": pass_process_rss_kb(), "agent_memory": common.memory(agent.pid)}


def table(r: dict[str, Any]) -> str:
    """The printed report."""
    n = r["passes"]
    per_pass_ms = r["wall_s"] / n * 1000
    lines = [f"{n} watchdog passes through POST /v1/jobs/watchdog/run, one after the other: "
             f"{per_pass_ms:.2f} ms each (client round trip)",
             "the agent's event loop, per pass (thread CPU):",
             f"  {'part':<8} {'callbacks':>9} {'CPU µs':>8} {'>50 µs':>7} {'>100 µs':>8}"]
    total = 0.0
    for part in PARTS:
        count, cpu_ns, over50, over100 = r["parts"].get(part, [0, 0, 0, 0])
        total += cpu_ns / n / 1000
        lines.append(f"  {part:<8} {count / n:9.1f} {cpu_ns / n / 1000:8.0f} {over50 / n:7.2f} "
                     f"{over100 / n:8.2f}")
    lines.append(f"  {'total':<8} {'':>9} {total:8.0f}   (busy {total / 10 / per_pass_ms:.0f} % "
                 "of the wall time)")
    lines.append("callbacks over 100 µs, most frequent:")
    lines += [f"  {count:5d}  {label[:150]}" for label, count in r["longest"]]
    mem = r["agent_memory"]
    alone = r["pass_process_rss_kb"] / 1024
    lines.append(f"agent VmRSS {mem['vmrss_bytes'] / 2**20:.1f} MB; a separate Python process "
                 f"importing only what a pass needs: VmRSS {alone:.1f} MB")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/looptrace.py", description=__doc__.splitlines()[0])
    p.add_argument("--passes", type=int, default=300, help="traced passes (default 300)")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run and print; 0 when it ran, 2 when it failed."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--agent"]:
        return agent_main(argv[1:])
    from bench import common
    args = _parser().parse_args(argv)
    status = common.bench_main(args, lambda a, s, t: run(a, s, t) | {"targets": []}, table,
                               prefix="vmbench-trace-")
    return status


if __name__ == "__main__":
    sys.exit(main())
