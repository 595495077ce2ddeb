"""Helpers of the benchmark: percentiles, /proc readings, processes we start, the machine.

Everything here reads ``/proc`` as ``man 5 proc`` documents it:
``/proc/<pid>/stat`` fields 14 and 15 (utime, stime, in clock ticks of
``SC_CLK_TCK``; for a pid they are the sum over all its threads) and
``/proc/<pid>/status`` ``VmRSS``/``VmHWM`` (kB).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1_000_000  # decimal, as the rest of the project (1 MB = 10^6 bytes)
MIB = 1024 * 1024


def percentile(sorted_values: list[int] | list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of an ascending list; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


def latency_summary(sorted_ns: list[int]) -> dict[str, float]:
    """``{n, p50_ms, p99_ms, mean_ms, max_ms}`` of ascending latencies in nanoseconds."""
    n = len(sorted_ns)
    mean = sum(sorted_ns) / n if n else 0.0
    return {"n": n, "p50_ms": percentile(sorted_ns, 50) / 1e6,
            "p99_ms": percentile(sorted_ns, 99) / 1e6, "mean_ms": mean / 1e6,
            "max_ms": (sorted_ns[-1] if n else 0) / 1e6}


def cpu_seconds(pid: int, *, tid: int | None = None) -> float:
    """utime + stime of ``pid`` (all its threads), seconds, from ``/proc/<pid>/stat``;
    of its thread ``tid`` alone from ``/proc/<pid>/task/<tid>/stat``."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    text = Path(path).read_text()
    fields = text[text.rindex(")") + 2:].split()  # comm may hold spaces; fields 3.. follow
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of man 5 proc


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` line (``VmRSS``, ``VmHWM``, ...) of ``/proc/<pid>/status``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(f"{key} not in /proc/{pid}/status")


def memory(pid: int) -> dict[str, int]:
    """Bytes: VmRSS and VmHWM (peak) from /proc, psutil's rss and uss."""
    full = psutil.Process(pid).memory_full_info()
    return {"vmrss_bytes": status_kb(pid, "VmRSS"), "vmhwm_bytes": status_kb(pid, "VmHWM"),
            "psutil_rss_bytes": full.rss, "psutil_uss_bytes": full.uss,
            "threads": psutil.Process(pid).num_threads()}


def wait_for_socket(path: str, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Poll until ``path`` accepts a connection; seconds waited.

    Raises RuntimeError when ``proc`` exits first or ``timeout_s`` passes.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode} before listening")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, \
                contextlib.suppress(OSError):
            s.connect(path)
            return time.monotonic() - started
        time.sleep(0.02)
    raise RuntimeError(f"{path} not accepting connections after {timeout_s:g} s")


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> int | None:
    """SIGTERM a process we started (by its pid), SIGKILL after ``timeout_s``; its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
    return proc.returncode


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages (``/proc/loadavg``): others' work skews the figures."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory, kernel, Python and the date (UTC), for the report."""
    return {"nproc": os.cpu_count(), "cpu_model": _cpu_model(),
            "memory_bytes": psutil.virtual_memory().total, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg_start": loadavg(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def get_json(sock_path: str, url_path: str, timeout_s: float = 5.0) -> Any:
    """``GET url_path`` over the Unix socket (``Connection: close``); the decoded JSON body.

    Raises OSError on a connection failure or timeout, ValueError on a non-JSON body.
    """
    return request_json(sock_path, "GET", url_path, timeout_s=timeout_s)[1]


def request_json(sock_path: str, method: str, url_path: str, body: Any = None,
                 timeout_s: float = 5.0) -> tuple[int, Any]:
    """One HTTP/1.1 request over the Unix socket (``Connection: close``); (status, JSON body).

    ``body`` (when not None) is sent as JSON.  Raises OSError on a connection
    failure or timeout, ValueError on a non-JSON answer.
    """
    payload = b"" if body is None else json.dumps(body).encode()
    head = (f"{method} {url_path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            + (f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
               if body is not None else "") + "\r\n")
    chunks: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(sock_path)
        s.sendall(head.encode("ascii") + payload)
        while chunk := s.recv(65536):
            chunks.append(chunk)
    status_line, _, rest = b"".join(chunks).partition(b"\r\n")
    _head, _, answer = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(answer)


def bench_main(args: Any, run: Callable[[Any, contextlib.ExitStack[Any], Path], dict[str, Any]],
               table: Callable[[dict[str, Any]], str], *, prefix: str) -> int:
    """Run one bench script: temp dir, cleanup on SIGTERM, table, ``--json``.

    Returns 0 when every target is met, 1 when one is missed, 2 when the
    bench itself failed (everything it started is stopped by ``run``'s stack).
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds the cleanup below
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        with contextlib.ExitStack() as stack:
            results = run(args, stack, tmp)
    except Exception:  # the bench failed, not a target: say why, exit 2
        traceback.print_exc()
        print("bench failed (see above); everything it started was stopped", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(t["met"] for t in results["targets"]) else 1
