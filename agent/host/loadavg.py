"""Load averages from ``/proc/loadavg`` (``man 5 proc``: "1 5 15 running/total lastpid")."""

from __future__ import annotations

import math
from pathlib import Path

from agent.host.model import HostReadError, LoadSample


def parse_loadavg(text: str, cores: int) -> LoadSample:
    """``"0.05 0.08 0.03 1/88 5247"`` -> load1/5/15 and ``load1 / cores``.

    ``cores`` below 1 is treated as 1.  Raises :class:`HostReadError` on
    malformed text, including a value that is not a finite number >= 0
    (``float`` would take "nan" and "inf", which are not JSON).
    """
    try:
        load1, load5, load15 = (float(v) for v in text.split()[:3])
    except ValueError as exc:
        raise HostReadError("/proc/loadavg", f"bad content: {text!r}") from exc
    if not all(math.isfinite(v) and v >= 0 for v in (load1, load5, load15)):
        raise HostReadError("/proc/loadavg", f"not a load average: {text!r}")
    return LoadSample(load1=load1, load5=load5, load15=load15,
                      load1_per_core=round(load1 / max(cores, 1), 3))


def read_loadavg(cores: int, proc_root: str | Path = "/proc") -> LoadSample:
    """Read ``<proc_root>/loadavg``; raises OSError or :class:`HostReadError`."""
    return parse_loadavg((Path(proc_root) / "loadavg").read_text(errors="replace"), cores)
