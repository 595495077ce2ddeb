"""Single flight per job kind: an ``flock(2)`` on ``<run_dir>/jobs/<job>.lock``.

The lock is advisory, exclusive and non-blocking (``LOCK_EX | LOCK_NB``), so
it works across the daemon and any other process (a CLI, a second daemon)
and the kernel releases it when its holder dies, even by SIGKILL: a lock is
never left behind.  Two opens in the *same* process conflict too (``flock``
locks belong to the open file description, ``man 2 flock``).

While held, the file holds one JSON line ``{"run_id", "pid"}`` naming the
run, so a refused requester can say which run is in the way; it is emptied
when the lock is taken (a SIGKILLed holder leaves its line behind: the kernel
drops only the flock) and before it is released.  The file itself is never unlinked (unlinking a
lock file races with a process that has just opened it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from agent.errors import BadRequest

_JOB_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")


def lock_path(run_dir: str | os.PathLike[str], job: str) -> Path:
    """``<run_dir>/jobs/<job>.lock``; BadRequest for a name that is not ``[a-z][a-z0-9-]*``."""
    if not _JOB_NAME.fullmatch(job):
        raise BadRequest("job", f"invalid job name {job!r}")
    return Path(run_dir) / "jobs" / f"{job}.lock"


class JobLock:
    """One job's lock file.  ``acquire()`` -> bool; ``release()`` is idempotent."""

    def __init__(self, run_dir: str | os.PathLike[str], job: str) -> None:
        self.path = lock_path(run_dir, job)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock without blocking; False when another holder has it.

        Raises OSError when the directory or file cannot be created or opened (e.g. the
        lock path is a directory).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # a dead holder's line names a run that is not ours
        self._fd = fd
        return True

    def set_owner(self, run_id: int) -> None:
        """Record ``{"run_id", "pid"}`` in the held lock file."""
        if self._fd is None:
            raise RuntimeError("lock not held")
        data = json.dumps({"run_id": run_id, "pid": os.getpid()}).encode() + b"\n"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Empty the file and drop the lock (no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock

    def owner(self) -> dict[str, Any] | None:
        """The ``{"run_id", "pid"}`` the current holder wrote, or None."""
        try:
            raw = json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None

    def wait_owner(self, timeout_s: float) -> dict[str, Any] | None:
        """The holder's ``{"run_id", "pid"}``, waiting up to ``timeout_s`` seconds for a
        holder that has just taken the lock to write it (polls every 20 ms; blocking)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.owner()
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)

    def is_locked(self) -> bool:
        """True when some holder (possibly this object) has the lock now."""
        if self._fd is not None:
            return True
        if not self.acquire():
            return True
        self.release()
        return False


def run_is_stale(run_dir: str | os.PathLike[str], job: str, run_id: int, *,
                 held: JobLock | None = None) -> bool:
    """Whether a ``running`` record ``run_id`` of ``job`` has no live run behind it.

    True when ``held`` is this job's lock (the caller holds it and has not started its
    own run yet), when nobody holds the lock, or when the holder names another run.
    """
    if held is not None and held.held and held.path.name == f"{job}.lock":
        return True
    lock = JobLock(run_dir, job)
    if lock.acquire():
        lock.release()
        return True
    owner = lock.owner()
    return owner is not None and owner.get("run_id") not in (None, run_id)
