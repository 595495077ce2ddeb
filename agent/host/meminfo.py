"""Memory and swap from ``/proc/meminfo`` (``man 5 proc``; kernel docs filesystems/proc.rst).

Values with a ``kB`` unit are KiB (1024 bytes) and are returned in bytes;
lines without a unit (``HugePages_Total: 0``) are counts and returned as is.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.host.model import HostReadError, MemorySample

log = logging.getLogger(__name__)

REQUIRED = ("MemTotal", "MemFree", "SwapTotal", "SwapFree", "SwapCached")
#: The user-space estimate the MemAvailable commit describes (see available_bytes).
ESTIMATE_FIELDS = ("MemFree", "Active(file)", "Inactive(file)", "SReclaimable")
#: The older "free + buffers + cached" rule, used when the LRU split is missing.
LEGACY_FIELDS = ("MemFree", "Buffers", "Cached")


def _parse_line(line: str) -> tuple[str, int] | None:
    """``"MemTotal:16384 kB"`` -> ``("MemTotal", 16777216)``; None for an unparsable line."""
    key, sep, rest = line.partition(":")
    parts = rest.split()
    if not sep or not parts or not (parts[0].isascii() and parts[0].isdigit()):
        return None
    value = int(parts[0])
    return key.strip(), value * 1024 if parts[1:2] == ["kB"] else value


def parse_meminfo(text: str) -> dict[str, int]:
    """Parse ``/proc/meminfo`` text into ``{field: bytes (or count)}``.

    A space after the colon is optional.  Unparsable lines are skipped.
    """
    fields: dict[str, int] = {}
    for line in text.splitlines():
        parsed = _parse_line(line)
        if parsed is not None:
            fields[parsed[0]] = parsed[1]
    return fields


def available_bytes(fields: dict[str, int]) -> int:
    """MemAvailable in bytes, with a fallback when it is missing or 0.

    Kernels before 3.14 have no MemAvailable (it arrived with commit
    34e431b0ae39 "/proc/meminfo: provide estimated available memory", Rik van
    Riel, 2014; ``man 5 proc``: "since Linux 3.14").  Some containers and old
    vendor kernels report 0.  Fallback, in order:

    1. MemFree + Active(file) + Inactive(file) + SReclaimable, the estimate that
       commit message gives for user space (it ignores the zones' low
       watermarks, so it slightly over-estimates);
    2. MemFree + Buffers + Cached when the fields of (1) are missing;
    3. MemFree alone.
    """
    if fields.get("MemAvailable", 0) > 0:
        return fields["MemAvailable"]
    for names in (ESTIMATE_FIELDS, LEGACY_FIELDS):
        if all(n in fields for n in names):
            return sum(fields[n] for n in names)
    return fields.get("MemFree", 0)


def memory_sample(fields: dict[str, int]) -> MemorySample:
    """A :class:`MemorySample` from parsed fields.

    swap used = SwapTotal - SwapFree, clamped at 0.  Raises
    :class:`HostReadError` when one of :data:`REQUIRED` is missing.
    """
    missing = [n for n in REQUIRED if n not in fields]
    if missing:
        raise HostReadError("/proc/meminfo", f"missing fields: {', '.join(missing)}")
    return MemorySample(
        total_bytes=fields["MemTotal"],
        available_bytes=available_bytes(fields),
        swap_total_bytes=fields["SwapTotal"],
        swap_used_bytes=max(0, fields["SwapTotal"] - fields["SwapFree"]),
        swap_cached_bytes=fields["SwapCached"],
    )


def read_meminfo(proc_root: str | Path = "/proc") -> MemorySample:
    """Read ``<proc_root>/meminfo``; raises OSError or :class:`HostReadError`.

    Bytes that are not UTF-8 become U+FFFD, so such a line is skipped.
    """
    text = (Path(proc_root) / "meminfo").read_text(errors="replace")
    return memory_sample(parse_meminfo(text))
