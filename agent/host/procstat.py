"""CPU steal and iowait shares from two ``/proc/stat`` reads (``man 5 proc``).

The aggregate ``cpu`` line holds cumulative times in USER_HZ ticks:
``user nice system idle iowait irq softirq steal guest guest_nice``.
``guest`` and ``guest_nice`` are already counted inside ``user`` and
``nice`` (kernel ``account_guest_time()``), so they are never added to the
total a second time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.host.model import CpuSample, HostReadError

#: Field order of a ``cpu`` line, ``man 5 proc``; older kernels omit the tail.
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
          "guest", "guest_nice")
#: The fields whose sum is the total CPU time (guest time is inside user/nice).
TOTAL_FIELDS = FIELDS[:8]


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU times of the aggregate ``cpu`` line, USER_HZ ticks."""

    user: int = 0
    nice: int = 0
    system: int = 0
    idle: int = 0
    iowait: int = 0
    irq: int = 0
    softirq: int = 0
    steal: int = 0
    guest: int = 0
    guest_nice: int = 0


@dataclass(frozen=True)
class StatSnapshot:
    """One ``/proc/stat`` read: the aggregate times and the online core count."""

    times: CpuTimes
    cores: int


def parse_cpu_line(line: str) -> CpuTimes:
    """``"cpu  2686 0 1859 ..."`` -> :class:`CpuTimes`; missing tail fields are 0.

    Raises :class:`HostReadError` when a value is not an integer or the line
    has fewer than 4 values (user nice system idle are always present).
    """
    values = line.split()[1:]
    if len(values) < 4:
        raise HostReadError("/proc/stat", f"short cpu line: {line!r}")
    try:
        numbers = [int(v) for v in values[: len(FIELDS)]]
    except ValueError as exc:
        raise HostReadError("/proc/stat", f"bad cpu line: {line!r}") from exc
    return CpuTimes(**dict(zip(FIELDS, numbers, strict=False)))


def parse_stat(text: str) -> StatSnapshot:
    """Parse ``/proc/stat`` text: the ``cpu`` line and the count of ``cpuN`` lines.

    ``cores`` falls back to ``os.cpu_count()`` (then 1) when no ``cpuN`` line
    exists.  Raises :class:`HostReadError` when the ``cpu`` line is missing.
    """
    aggregate: CpuTimes | None = None
    cores = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            aggregate = parse_cpu_line(line)
        elif line.startswith("cpu") and line[3:4].isdigit():
            cores += 1
    if aggregate is None:
        raise HostReadError("/proc/stat", "no aggregate 'cpu' line")
    return StatSnapshot(aggregate, cores or os.cpu_count() or 1)


def read_stat(proc_root: str | Path = "/proc") -> StatSnapshot:
    """Read and parse ``<proc_root>/stat``; raises OSError or :class:`HostReadError`.

    Bytes that are not UTF-8 become U+FFFD (a garbled ``cpu`` line is then a
    HostReadError, a garbled other line is ignored), never a UnicodeDecodeError.
    """
    return parse_stat((Path(proc_root) / "stat").read_text(errors="replace"))


def _deltas(prev: CpuTimes, cur: CpuTimes) -> dict[str, int]:
    """Per-field ``cur - prev`` over :data:`TOTAL_FIELDS`, each clamped at 0."""
    return {f: max(0, getattr(cur, f) - getattr(prev, f)) for f in TOTAL_FIELDS}


def cpu_shares(prev: CpuTimes, cur: CpuTimes) -> tuple[float, float]:
    """``(steal_percent, iowait_percent)`` of the time between two reads, 0-100.

    total = delta of user+nice+system+idle+iowait+irq+softirq+steal (guest and
    guest_nice excluded: they are inside user and nice, ``man 5 proc``).  Each
    field's delta is clamped at 0, so a counter that went backwards (live
    migration, hypervisor bugs, iowait on NO_HZ kernels) counts as 0; a zero
    total gives ``(0.0, 0.0)``.  Rounded to 2 decimals.
    """
    delta = _deltas(prev, cur)
    total = sum(delta.values())
    if total <= 0:
        return 0.0, 0.0
    return round(100 * delta["steal"] / total, 2), round(100 * delta["iowait"] / total, 2)


def cpu_sample(prev: StatSnapshot, cur: StatSnapshot, window_s: float) -> CpuSample:
    """A :class:`CpuSample` from two snapshots ``window_s`` seconds apart."""
    steal, iowait = cpu_shares(prev.times, cur.times)
    return CpuSample(cores=cur.cores, steal_percent=steal, iowait_percent=iowait,
                     window_s=round(window_s, 3))
