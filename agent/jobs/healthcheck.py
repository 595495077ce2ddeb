"""``healthcheck``: a fresh host sample and, when WARN or CRIT, one message saying what to do.

One step, ``check``: :meth:`agent.host.sampler.HostSampler.sample_now` (a
new cpu window and a new Docker probe), then every metric whose level
(:mod:`agent.host.levels`, limits from ``thresholds``) is not OK becomes one
line of the message: its value, the limit it crossed and plain advice.  The
message is queued in the durable outbox (:class:`agent.notify.outbox.Outbox`,
kind ``healthcheck``) for delivery.  Status OK sends nothing; the step's
detail says what was found either way.  A dry-run builds the message and
queues nothing.  Not destructive: it reads, it changes nothing on the host.

Units in the text: MB/GB = 10^6/10^9 bytes (as Docker and the CLI print
sizes), percent 0-100.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.config import Threshold, ThresholdsConfig
from agent.host.levels import DISK_PREFIX
from agent.host.model import HostSample, Level
from agent.jobs.base import JobContext, Step, StepResult
from agent.notify.outbox import Outbox

KIND = "healthcheck"


@dataclass(frozen=True)
class Finding:
    """One metric over its limit: ``value`` and ``limit`` as display text."""

    metric: str
    level: Level
    label: str
    value: str
    limit: str
    advice: str

    def line(self) -> str:
        """``- [WARN] CPU steal: 7.2 % (WARN above 5 %). <advice>``"""
        return f"- [{self.level}] {self.label}: {self.value} ({self.limit}). {self.advice}"


def size(n: float) -> str:
    """Bytes as ``850 MB`` / ``1.5 GB`` (10^6 / 10^9 bytes)."""
    return f"{n / 1e9:.1f} GB" if abs(n) >= 1e9 else f"{n / 1e6:.0f} MB"


def pct(p: float) -> str:
    """Percent 0-100 as ``7.2 %``."""
    return f"{p:.1f} %"


def _limit(level: Level, t: Threshold, fmt: Callable[[float], str], *, below: bool = False) -> str:
    crossed = t.crit if level == "CRIT" else t.warn
    side = "below" if below else "above"
    return f"{level} {side} {fmt(crossed)}" if crossed is not None else level


_ADVICE = {
    "steal_percent": "CPU steal is time the hypervisor gave to other VMs: the host is "
                     "oversubscribed, not this VM busy. Check the provider's status page; if it "
                     "lasts for days, ask the provider to migrate the VM or move to dedicated "
                     "vCPUs.",
    "iowait_percent": "Processes are waiting on disk. Find the heavy writers with `vm-agentctl "
                      "io` and check the volume's IOPS limit with the provider.",
    "swap_used_bytes": "The VM is short of RAM. Find the largest containers with `docker stats "
                       "--no-stream`, give them a mem_limit or restart the one that grew, or "
                       "add RAM.",
    "memory_available_bytes": "Little memory is left before the kernel's OOM killer picks a "
                              "process. Stop or limit the largest containers (`docker stats "
                              "--no-stream`) now.",
    "unhealthy_containers": "See why with `docker inspect --format '{{json .State.Health}}' "
                            "NAME` and `docker logs --tail 100 NAME`; the watchdog restarts "
                            "them per its policy (`vm-agentctl containers`).",
    "docker_available": "The agent cannot reach Docker: check `systemctl status docker` and "
                        "`journalctl -u docker --since -1h`.",
}
_SWAP_CACHED = ("SwapCached is an early sign of memory pressure: pages were swapped out and "
                "read back in. Act before MemAvailable runs out: find the containers that grew "
                "(`docker stats --no-stream`) and restart or limit them.")
_DISK = ("Run `vm-agentctl run cleanup --mode weekly --dry-run` to see what cleanup would free, "
         "then run it without --dry-run; look for big logs and volumes with `du -xh -d1 {m} | "
         "sort -h`.")


def findings(sample: HostSample, t: ThresholdsConfig) -> list[Finding]:
    """One :class:`Finding` per metric of ``sample.levels`` that is WARN or CRIT, worst first.

    Values come from ``sample``; limits from ``t`` (the same limits that set the levels).
    """
    found = [_finding(name, level, sample, t) for name, level in sample.levels.items()
             if level != "OK"]
    return sorted(found, key=lambda f: f.level != "CRIT")


def _finding(name: str, level: Level, s: HostSample, t: ThresholdsConfig) -> Finding:
    if name.startswith(DISK_PREFIX):
        return _disk(name[len(DISK_PREFIX):], level, s, t)
    build: dict[str, Callable[[], tuple[str, str, str]]] = {
        "steal_percent": lambda: ("CPU steal", pct(s.cpu.steal_percent),
                                  _limit(level, t.steal_percent, pct)),
        "iowait_percent": lambda: ("CPU iowait", pct(s.cpu.iowait_percent),
                                   _limit(level, t.iowait_percent, pct)),
        "swap_used_bytes": lambda: ("Swap used", size(s.memory.swap_used_bytes),
                                    _limit(level, t.swap_used_bytes, size)),
        "swap_cached_bytes": lambda: ("SwapCached", size(s.memory.swap_cached_bytes),
                                      _limit(level, t.swap_cached_bytes, size)),
        "memory_available_bytes": lambda: (
            "MemAvailable", size(s.memory.available_bytes),
            _limit(level, t.memory_available_bytes, size, below=True)),
        "load1_per_core": lambda: ("Load per core (1 min)", f"{s.load.load1_per_core:.2f}",
                                   _limit(level, t.load1_per_core, lambda v: f"{v:g}")),
        "unhealthy_containers": lambda: _unhealthy(level, s, t),
        "docker_available": lambda: ("Docker", f"unavailable ({s.docker.error})", level),
    }
    label, value, limit = build[name]() if name in build else (name, "?", level)
    advice = (_SWAP_CACHED if name == "swap_cached_bytes" else
              _load_advice(s.load.load1_per_core, level, t) if name == "load1_per_core" else
              _ADVICE.get(name, ""))
    return Finding(name, level, label, value, limit, advice)


_LOAD_TAIL = " See what is busy with `top` (and steal above); move batch work out of peak hours."


def _load_advice(per_core: float, level: Level, t: ThresholdsConfig) -> str:
    """Advice that matches the value: over 1.0 per core means tasks wait for a CPU."""
    if per_core > 1.0:
        return "More runnable tasks than cores." + _LOAD_TAIL
    crossed = t.load1_per_core.crit if level == "CRIT" else t.load1_per_core.warn
    limit = f"{crossed:g}" if crossed is not None else "?"
    return (f"Load ({per_core:.2f} per core) is above your configured limit of {limit} but "
            "under one runnable task per core: the CPUs are busy, not saturated." + _LOAD_TAIL)


def _unhealthy(level: Level, s: HostSample, t: ThresholdsConfig) -> tuple[str, str, str]:
    names = ", ".join(s.docker.unhealthy_names)
    value = f"{s.docker.unhealthy}" + (f" ({names})" if names else "")
    return "Unhealthy containers", value, _limit(level, t.unhealthy_containers,
                                                 lambda v: f"{v:g}")


def _disk(mount: str, level: Level, s: HostSample, t: ThresholdsConfig) -> Finding:
    disk = next((d for d in s.disks if d.mount == mount), None)
    if disk is None:
        return Finding(f"{DISK_PREFIX}{mount}", level, f"Disk {mount}", "not measured",
                       level, f"The mount could not be read: check that {mount} is mounted "
                       "and responsive (`df -h`).")
    value = f"{pct(disk.used_percent)} used, {size(disk.free_bytes)} free"
    return Finding(f"{DISK_PREFIX}{mount}", level, f"Disk {mount}", value,
                   _limit(level, t.disk_used_percent, pct), _DISK.format(m=mount))


def message(sample: HostSample, found: list[Finding]) -> str | None:
    """The message text, or None when ``sample.status`` is OK."""
    if sample.status == "OK":
        return None
    head = (f"vm-agent health check: {sample.status} at {sample.sampled_at}\n"
            f"{len(found)} {'metric' if len(found) == 1 else 'metrics'} over threshold:")
    return "\n".join([head, *(f.line() for f in found)])


def summary(sample: HostSample, found: list[Finding]) -> str:
    """One line for the run record: the status and each finding (or the key figures)."""
    if not found:
        m = sample.memory
        return (f"status OK: steal {pct(sample.cpu.steal_percent)}, MemAvailable "
                f"{size(m.available_bytes)}, swap {size(m.swap_used_bytes)}, SwapCached "
                f"{size(m.swap_cached_bytes)}, unhealthy {sample.docker.unhealthy}; no message")
    return f"status {sample.status}: " + "; ".join(f"{f.label} {f.value}" for f in found)


class HealthcheckJob:
    """See the module docstring."""

    name = "healthcheck"
    modes = ("default",)
    default_mode = "default"
    destructive = False

    async def plan(self, ctx: JobContext, mode: str) -> list[Step]:
        """A single ``check`` step."""
        return [Step("check", "healthcheck", "take a fresh sample; message when WARN or CRIT")]

    async def execute(self, ctx: JobContext, step: Step, *, dry_run: bool) -> StepResult:
        """Sample, then queue the message (not in a dry-run); ``failed`` without a sampler."""
        sampler: Any = getattr(ctx.services, "sampler", None)
        store = getattr(ctx.services, "store", None)
        if sampler is None or not hasattr(sampler, "sample_now") or store is None:
            return StepResult(step.name, "failed", error="no host sampler or store")
        sample: HostSample = await sampler.sample_now()
        found = findings(sample, ctx.config.thresholds)
        text, detail = message(sample, found), summary(sample, found)
        if dry_run:
            return StepResult(step.name, "planned", detail=detail + (
                f"; would send:\n{text}" if text else ""))
        if text is None:
            return StepResult(step.name, "ok", detail=detail)
        msg_id = await asyncio.to_thread(Outbox(store).enqueue, text, kind=KIND)
        return StepResult(step.name, "ok", detail=f"{detail}; message {msg_id} queued")
