"""The host side of Ollama: its runner processes (psutil), GPU visibility and the RAM bar.

Runner processes: Ollama serves from ``ollama serve`` and runs each loaded
model in a child.  Since about v0.5 the child is the same binary started as
``ollama runner --model <blob> ...`` (process name ``ollama``); earlier
versions started ``ollama_llama_server`` (``/proc/PID/comm`` truncates it to
``ollama_llama_se``; psutil restores the full name from the command line).
Both are matched; ``ollama serve`` itself is not a runner.  psutil is imported on first
use (the agent's RSS budget).
"""

from __future__ import annotations

import asyncio
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psutil  # imported lazily below: ~2.5 MB of RSS only once the panel is used

RUNNER_NAMES = ("ollama_llama_server",)
#: Device nodes that mean a GPU is usable: NVIDIA, DRM render nodes (Intel/AMD), AMD ROCm.
GPU_GLOBS = ("nvidia*", "dri/renderD*", "kfd")
NO_GPU_NOTE = "GPU: none, inference will run on the CPU"


def is_runner(name: str, cmdline: list[str]) -> bool:
    """Whether a process (name, argv) is an Ollama model runner (see the module docstring)."""
    if name in RUNNER_NAMES or name.startswith("ollama_llama_se"):
        return True
    return name == "ollama" and "runner" in cmdline[1:]


@dataclass(frozen=True)
class Runners:
    """Every runner process: pids, summed RSS (bytes) and CPU (percent 0-100 of all CPUs)."""

    pids: tuple[int, ...]
    rss_bytes: int
    cpu_percent: float

    def to_wire(self) -> dict[str, Any]:
        """``{pids, rss_bytes, cpu_percent}``."""
        return {"pids": list(self.pids), "rss_bytes": self.rss_bytes,
                "cpu_percent": round(self.cpu_percent, 1)}


def _find() -> list[psutil.Process]:
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        name, cmdline = proc.info.get("name") or "", proc.info.get("cmdline") or []
        if is_runner(name, cmdline):
            found.append(proc)
    return found


def _cpu_times(procs: list[psutil.Process]) -> dict[int, float]:
    import psutil

    out = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
            out[proc.pid] = times.user + times.system
        except psutil.Error:
            continue
    return out


def _rss(procs: list[psutil.Process]) -> int:
    import psutil

    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


async def runners(window_s: float = 0.2) -> Runners:
    """Runner processes, their RSS and their CPU use over ``window_s`` seconds.

    CPU percent = (user + system CPU seconds spent in the window) / window /
    CPU count * 100, so 0-100 of the whole machine (``top`` would show up to
    100 x cores).  Scans ``/proc`` through psutil off the event loop.
    """
    procs = await asyncio.to_thread(_find)
    before = await asyncio.to_thread(_cpu_times, procs)
    start = asyncio.get_running_loop().time()
    await asyncio.sleep(window_s)
    after = await asyncio.to_thread(_cpu_times, procs)
    elapsed = max(asyncio.get_running_loop().time() - start, 1e-6)
    spent = sum(after[pid] - before[pid] for pid in after if pid in before)
    cpu = 100.0 * spent / elapsed / (os.cpu_count() or 1)
    alive = [p for p in procs if p.pid in after]
    return Runners(tuple(p.pid for p in alive), await asyncio.to_thread(_rss, alive), cpu)


def gpu(dev_root: str | Path = "/dev") -> dict[str, Any]:
    """``{present, devices, note}``: a GPU is visible when one of :data:`GPU_GLOBS` exists
    under ``dev_root``."""
    devices = sorted(p for pattern in GPU_GLOBS for p in glob.glob(os.path.join(dev_root, pattern)))
    if not devices:
        return {"present": False, "devices": [], "note": NO_GPU_NOTE}
    return {"present": True, "devices": devices,
            "note": f"GPU visible ({', '.join(os.path.basename(d) for d in devices)})"}


def ram_bar(total_bytes: int, available_bytes: int, models_bytes: int) -> dict[str, int]:
    """``{total_bytes, system_used_bytes, models_bytes, free_bytes}``.

    free = MemAvailable; models = the loaded models' RAM share (size -
    size_vram, from ``/api/ps``); system used = MemTotal - MemAvailable -
    models, clamped at 0 (the three parts add up to MemTotal unless Ollama
    reports more than the kernel counts as used).
    """
    used = max(0, total_bytes - available_bytes - models_bytes)
    return {"total_bytes": total_bytes, "system_used_bytes": used,
            "models_bytes": models_bytes, "free_bytes": available_bytes}
