"""A container's current memory use, read from its cgroup (cheap: two small file reads).

Docker's stats API takes about 2 s per container (it waits for a second CPU
sample); the kernel's own counter is what it reports anyway:

- cgroup v1: ``<root>/memory/<path>/memory.usage_in_bytes``
  (``Documentation/admin-guide/cgroup-v1/memory.rst``);
- cgroup v2: ``<root>/<path>/memory.current``
  (``Documentation/admin-guide/cgroup-v2.rst``).

``<path>`` is the container's cgroup as its main process sees it in
``<proc_root>/<pid>/cgroup`` (``man 7 cgroups``): the ``memory`` line on v1
(``4:memory:/docker/<id>``), the ``0::`` line on v2
(``0::/system.slice/docker-<id>.scope``).  This covers the cgroupfs and the
systemd drivers and any ``cgroup_parent``.  When the process file cannot be
read, the usual layouts are tried: ``docker/<id>`` and
``system.slice/docker-<id>.scope``.  Unreadable gives None, never an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

V1_FILE = "memory.usage_in_bytes"
V2_FILE = "memory.current"


def memory_bytes(container_id: str, pid: int, *, cgroup_root: str,
                 proc_root: str = "/proc") -> int | None:
    """Bytes of memory charged to the container's cgroup now; None when unknown.

    ``pid`` is ``State.Pid`` (0 when not running: then None).
    """
    if pid <= 0:
        return None
    root = Path(cgroup_root)
    for candidate in _candidates(container_id, pid, root, Path(proc_root)):
        try:
            return int(candidate.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return None


def _candidates(container_id: str, pid: int, root: Path, proc: Path) -> Iterator[Path]:
    v1, v2 = _own_paths(proc / str(pid) / "cgroup")
    if v1 is not None:
        yield root / "memory" / v1 / V1_FILE
    if v2 is not None:
        yield root / v2 / V2_FILE
        yield root / "unified" / v2 / V2_FILE
    for rel in (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope"):
        yield root / "memory" / rel / V1_FILE
        yield root / rel / V2_FILE


def _own_paths(cgroup_file: Path) -> tuple[str | None, str | None]:
    """(v1 memory path, v2 path) from a ``/proc/<pid>/cgroup`` file, relative (no leading /)."""
    v1 = v2 = None
    try:
        text = cgroup_file.read_text()
    except OSError:
        return None, None
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "memory" in controllers.split(","):
            v1 = path.lstrip("/")
        elif hierarchy == "0" and controllers == "":
            v2 = path.lstrip("/")
    return v1, v2
