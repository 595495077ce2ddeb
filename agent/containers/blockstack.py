"""Block devices stacked on others (LVM, dm-crypt, md) and writes counted once.

The kernel charges a write to a stacked device twice in a cgroup's counters
(``io.stat`` on v2, ``blkio.throttle.io_service_bytes`` on v1): to the upper
device and again to the disk under it, where the clone is submitted.  The
stacking comes from ``/sys/class/block/*/holders``
(``Documentation/ABI/stable/sysfs-block``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: Whole-disk ``MAJ:MIN`` -> the ``MAJ:MIN`` of the devices stacked on it.
Holders = Mapping[str, frozenset[str]]


def writes_once(per_device: Mapping[str, int], holders: Holders) -> int:
    """Bytes written, each write counted once although stacked devices see it twice.

    A write to an LVM volume, dm-crypt or md device is charged to the upper
    device and again to the disk under it (the clone is submitted there).
    A device with others stacked on it (``holders``) counts only what it
    has beyond their writes (its other partitions, metadata); a stack with a
    lower device not listed counts its upper one.
    """
    total = 0
    for device, written in per_device.items():
        above = sum(per_device.get(upper, 0) for upper in holders.get(device, ()))
        total += max(0, written - above)
    return total


def block_holders(sys_root: str = "/sys") -> dict[str, frozenset[str]]:
    """Which block devices are stacked on which disk, from ``<sys_root>/class/block``.

    ``{disk MAJ:MIN: {upper MAJ:MIN, ...}}``: the entries of ``holders/`` of
    each disk and of each of its partitions (a partition's writes are charged
    to its disk in ``io.stat``).  Source: ``Documentation/ABI/stable/sysfs-block``
    (``holders``, ``dev``, ``partition``).  Unreadable entries are skipped;
    no sysfs gives ``{}``.
    """
    base = Path(sys_root, "class", "block")
    try:
        names = os.listdir(base)
    except OSError:
        return {}
    found: dict[str, set[str]] = {}
    for name in names:
        try:
            uppers = {dev for held in os.listdir(base / name / "holders")
                      if (dev := _devno(base / held)) is not None}
        except OSError:
            continue
        entry = base / name
        disk = _devno(entry.resolve().parent if (entry / "partition").exists() else entry)
        if uppers and disk is not None:
            found.setdefault(disk, set()).update(uppers)
    return {disk: frozenset(uppers) for disk, uppers in found.items()}


def _devno(device_dir: Path) -> str | None:
    try:
        return (device_dir / "dev").read_text().strip() or None
    except OSError:
        return None
