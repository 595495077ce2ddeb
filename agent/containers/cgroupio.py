"""Per-container block-write counters, read straight from the container's cgroup (pure).

Sources (kernel documentation):

- cgroup v2, ``Documentation/admin-guide/cgroup-v2.rst`` "io.stat": a
  nested-keyed file, one line per device ``MAJ:MIN rbytes=N wbytes=N rios=N
  wios=N dbytes=N dios=N``; ``wbytes`` is bytes written.  Lines are not
  ordered and a device without IO has no line.
- cgroup v1, ``Documentation/admin-guide/cgroup-v1/blkio-controller.rst``:
  ``blkio.throttle.io_service_bytes`` "number of bytes transferred to/from
  the disk by the group", lines ``MAJ:MIN Read|Write|Sync|Async|Discard|Total
  N`` plus a last ``Total N``; ``blkio.throttle.io_service_bytes_recursive``
  is the same including descendants.  Some kernels fill only one of the two,
  so both are read and the larger Write sum is used (each is a monotonic
  counter, so their maximum is one too).

  Caveats of v1 (why cgroup v2 is the supported layout): v1 does not charge
  buffered writeback to the writing cgroup (cgroup writeback exists on v2
  only), so only direct and synchronous writes show up; and since Linux 6.10
  (commit a3166c51702b "blk-throttle: delay initialization until
  configuration") the throttle counters stay 0 until some throttle limit has
  been set on the device.

Both charge a write to a stacked device (LVM, dm-crypt, md) twice: to the
upper device and to the disk under it; :mod:`agent.containers.blockstack`
counts it once, from the ``holders`` links of ``/sys/class/block``.

Where the cgroup is (both drivers, both versions):

1. From ``/proc/<State.Pid>/cgroup`` of the container's main process
   (``man 7 cgroups``: lines ``hierarchy-ID:controller-list:path``; ``0::path``
   is v2, the line whose controllers include ``blkio`` is v1).  This works for
   every driver, a custom ``--cgroup-parent`` and a Docker that itself runs in
   a container.  Paths are relative to the reader's cgroup namespace, which
   is the root of the cgroup mount it sees.
2. Fallback, by layout: ``system.slice/docker-<id>.scope`` (systemd driver),
   ``docker/<id>`` (cgroupfs driver), and both one or two levels deeper
   (``<parent>/docker/<id>`` when this host is itself a container), under the
   v2 mount (``<root>`` or the hybrid ``<root>/unified``) and under
   ``<root>/blkio`` for v1.

Nothing here writes to a cgroup.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.containers.blockstack import Holders, writes_once
from agent.errors import Internal

DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup"
V2_FILE = "io.stat"
V1_FILES = ("blkio.throttle.io_service_bytes", "blkio.throttle.io_service_bytes_recursive")
_LAYOUTS = ("system.slice/docker-{id}.scope", "docker/{id}")
_NESTING = ("", "*/", "*/*/")


class CgroupReadError(Internal):
    """A cgroup io file that is missing or cannot be parsed (``details``: ``{"source": path}``)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}", {"source": source})


@dataclass(frozen=True)
class CgroupLocation:
    """A container's cgroup directory; ``version`` 2 reads ``io.stat``, 1 the blkio files."""

    version: Literal[1, 2]
    path: Path

    @property
    def source(self) -> str:
        """The counter's file: ``io.stat`` or ``blkio.throttle.io_service_bytes``."""
        return V2_FILE if self.version == 2 else V1_FILES[0]


@dataclass(frozen=True)
class WriteCounter:
    """Bytes written by a cgroup since it was created; ``incarnation`` is its directory's inode.

    A recreated cgroup (a restarted container) has a new inode, so a change of
    ``incarnation`` means the counter started again from 0.
    """

    write_bytes: int
    incarnation: int


def io_stat_devices(text: str) -> dict[str, int]:
    """``{MAJ:MIN: wbytes}`` of a v2 ``io.stat`` (a line without ``wbytes=`` counts 0).

    Raises ValueError on a ``wbytes`` value that is not an integer.
    """
    found: dict[str, int] = {}
    for line in text.splitlines():
        device, *fields = line.split() or [""]
        for field in fields:
            key, _, value = field.partition("=")
            if key == "wbytes":
                found[device] = found.get(device, 0) + int(value)
    return found


def parse_io_stat(text: str) -> int:
    """Sum of ``wbytes=`` over every device line of a v2 ``io.stat``, bytes.

    Raises ValueError on a ``wbytes`` value that is not an integer.
    """
    return sum(io_stat_devices(text).values())


def service_bytes_devices(text: str) -> dict[str, int]:
    """``{MAJ:MIN: bytes}`` of the ``MAJ:MIN Write N`` lines of a v1
    ``blkio.throttle.io_service_bytes`` (``Total`` lines are ignored).

    Raises ValueError on a Write value that is not an integer.
    """
    found: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Write":
            found[parts[0]] = found.get(parts[0], 0) + int(parts[2])
    return found


def parse_service_bytes(text: str) -> int:
    """Sum of the ``MAJ:MIN Write N`` lines of a v1 ``blkio.throttle.io_service_bytes``, bytes.

    The trailing ``Total N`` line (all devices, all operations) is ignored.
    Raises ValueError on a Write value that is not an integer.
    """
    return sum(service_bytes_devices(text).values())


def parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """``(v2 path, v1 blkio path)`` from a ``/proc/<pid>/cgroup`` (``man 7 cgroups``).

    Either is None when the process is not in such a hierarchy.
    """
    v2 = v1 = None
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "blkio" in controllers.split(","):
            v1 = path
    return v2, v1


def _v2_dirs(root: Path) -> tuple[Path, ...]:
    """The v2 mount: ``<root>`` (unified) and ``<root>/unified`` (hybrid)."""
    return root, root / "unified"


def _has_counters(loc: CgroupLocation) -> bool:
    if loc.version == 2:
        return (loc.path / V2_FILE).is_file()
    return any((loc.path / name).is_file() for name in V1_FILES)


def _from_proc(pid: int, root: Path, proc_root: str) -> list[CgroupLocation]:
    try:
        text = Path(proc_root, str(pid), "cgroup").read_text()
    except OSError:
        return []
    v2, v1 = parse_proc_cgroup(text)
    found: list[CgroupLocation] = []
    if v2 is not None:
        found += [CgroupLocation(2, base / v2.lstrip("/")) for base in _v2_dirs(root)]
    if v1 is not None:
        found.append(CgroupLocation(1, root / "blkio" / v1.lstrip("/")))
    return found


def _by_layout(container_id: str, root: Path) -> list[CgroupLocation]:
    patterns = [nest + layout.format(id=container_id)
                for nest in _NESTING for layout in _LAYOUTS]
    bases: list[tuple[Literal[1, 2], Path]] = [(2, root), (2, root / "unified"),
                                               (1, root / "blkio")]
    return [CgroupLocation(version, path) for version, base in bases
            for pattern in patterns for path in sorted(base.glob(pattern))]


def locate(container_id: str, pid: int | None, *, cgroup_root: str = DEFAULT_CGROUP_ROOT,
           proc_root: str = "/proc") -> CgroupLocation | None:
    """Where the container's write counters are, or None when no cgroup with them is found.

    ``container_id`` is the full 64-hex id; ``pid`` its ``State.Pid`` (0 or
    None: not running, the layout search only).  The cgroup named by
    ``/proc/<pid>/cgroup`` wins; v2 is preferred over v1 in each step.
    """
    root = Path(cgroup_root)
    candidates = _from_proc(pid, root, proc_root) if pid else []
    candidates += _by_layout(container_id, root)
    return next((loc for loc in candidates if _has_counters(loc)), None)


def read_counter(loc: CgroupLocation, holders: Holders | None = None) -> WriteCounter:
    """The cgroup's bytes written so far and its incarnation.

    Summed over devices, each write once when ``holders``
    (:func:`agent.containers.blockstack.block_holders`)
    says which devices are stacked on which (None: a plain sum).  Raises
    CgroupReadError when the directory or its files are gone (the container
    stopped or was removed) or a file cannot be parsed.
    """
    try:
        incarnation = os.stat(loc.path).st_ino
    except OSError as exc:
        raise CgroupReadError(str(loc.path), exc.strerror or "cannot stat") from None
    if loc.version == 2:
        return WriteCounter(_v2_sum(loc.path / V2_FILE, holders or {}), incarnation)
    return WriteCounter(_v1_sum(loc.path, holders or {}), incarnation)


def _v2_sum(path: Path, holders: Holders) -> int:
    text = _read_text(path)
    if text is None:
        raise CgroupReadError(str(path), "no such file")
    return writes_once(_parsed(path, text, io_stat_devices), holders)


def _v1_sum(directory: Path, holders: Holders) -> int:
    sums = [writes_once(_parsed(directory / name, text, service_bytes_devices), holders)
            for name in V1_FILES if (text := _read_text(directory / name)) is not None]
    if not sums:
        raise CgroupReadError(str(directory / V1_FILES[0]), "no blkio throttle counters")
    return max(sums)


def _read_text(path: Path) -> str | None:
    """The file's text; None when it does not exist.  Raises CgroupReadError otherwise."""
    try:
        return path.read_text(errors="replace")  # a bad byte fails the parse, not the pass
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CgroupReadError(str(path), exc.strerror or "cannot read") from None


def _parsed(path: Path, text: str,
            parse: Callable[[str], dict[str, int]]) -> dict[str, int]:
    try:
        return parse(text)
    except ValueError as exc:
        raise CgroupReadError(str(path), f"cannot parse: {exc}") from None
