"""Disk usage of mount points with ``os.statvfs``, as ``df`` (GNU coreutils) computes it.

* total = f_blocks * f_frsize
* used  = (f_blocks - f_bfree) * f_frsize
* free  = f_bavail * f_frsize (available to unprivileged users; root's
  reserved blocks are neither used nor free, as in df)
* used_percent = used / (used + free) * 100, rounded *up* to 0.01.  df prints
  the same ratio rounded up to a whole percent, so ``ceil(used_percent)`` is
  exactly df's ``Use%``.

A negative block count (an NFS server over its reservation reports a negative
f_bavail: CPython on 64-bit Linux returns it as a negative int, an unsigned
conversion as ``2**64 - n``; gnulib's fsusage reads the top bit as the sign) is
0, and used is never below 0: such a disk has free 0 and used_percent 100,
where df prints a Use% above 100 and a negative Avail.

Each statvfs runs in a daemon thread of its own, never in the event loop's
default executor: a call blocked on a dead server must neither take a worker
the rest of the agent needs nor keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable

from agent.host.model import DiskSample

log = logging.getLogger(__name__)


def used_percent(used: int, free: int) -> float:
    """``used / (used + free) * 100`` rounded up to 0.01; 0.0 when both are 0."""
    denominator = used + free
    if denominator <= 0:
        return 0.0
    return -(-used * 10000 // denominator) / 100


def disk_usage(mount: str) -> DiskSample:
    """One mount's usage in bytes.  Raises OSError (e.g. FileNotFoundError).

    Blocking: a hung network mount blocks the caller; call it in a thread.
    """
    st = os.statvfs(mount)
    blocks, bfree, bavail = (_count(v) for v in (st.f_blocks, st.f_bfree, st.f_bavail))
    used = max(0, blocks - bfree) * st.f_frsize
    free = bavail * st.f_frsize
    return DiskSample(mount=mount, total_bytes=blocks * st.f_frsize, used_bytes=used,
                      free_bytes=free, used_percent=used_percent(used, free))


def _count(value: int) -> int:
    """A statvfs block count, 0 when negative (see the module docstring)."""
    if value >= 1 << 63:
        value -= 1 << 64
    return max(0, value)


def read_disks(mounts: Iterable[str]) -> tuple[DiskSample, ...]:
    """Usage of each mount; a mount that cannot be read is skipped with a logged warning."""
    samples = []
    for mount in mounts:
        try:
            samples.append(disk_usage(mount))
        except OSError as exc:
            log.warning("disk %s not sampled: %s", mount, exc)
    return tuple(samples)


class DiskReader:
    """Reads mounts with :func:`disk_usage` in daemon threads, each bounded by ``timeout_s``.

    A statvfs on a hung network mount cannot be cancelled.  A call still
    running is shared by every read that asks for that mount meanwhile (the
    sampler's loop, a fresh sample, a job's disk figures), so at most one
    thread per mount is ever stuck; once it has run ``timeout_s`` the mount is
    reported unsampled, and not retried, until the call returns.  A read may
    wait less (``wait_s``): a mount whose call is still within its time is then
    unsampled for that read only, and its call goes on for the next.  Failures
    are logged once per distinct message; recovery is logged at INFO.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        #: the running call of each mount and when it started (time.monotonic())
        self._running: dict[str, tuple[asyncio.Future[DiskSample], float]] = {}
        self._errors: dict[str, str] = {}

    async def read(self, mounts: Iterable[str], *, wait_s: float | None = None,
                   ) -> tuple[tuple[DiskSample, ...], tuple[str, ...]]:
        """``(samples, unsampled_mounts)``, in the order of ``mounts`` (each mount once),
        waiting at most ``wait_s`` seconds (default ``timeout_s``)."""
        mounts = tuple(dict.fromkeys(mounts))
        results = await asyncio.gather(*(self._one(m, wait_s) for m in mounts))
        samples = tuple(r for r in results if r is not None)
        unsampled = tuple(m for m, r in zip(mounts, results, strict=True) if r is None)
        return samples, unsampled

    async def _one(self, mount: str, wait_s: float | None) -> DiskSample | None:
        try:
            sample = await self._statvfs(mount, wait_s)
        except _StillRunning:
            return None
        except OSError as exc:  # TimeoutError included
            self._failed(mount, str(exc))
            return None
        if self._errors.pop(mount, None) is not None:
            log.info("disk %s sampled again", mount)
        return sample

    async def _statvfs(self, mount: str, wait_s: float | None) -> DiskSample:
        """:func:`disk_usage` in a thread (the mount's running call, or a new one);
        TimeoutError after ``timeout_s`` or while hung, _StillRunning after ``wait_s``."""
        future, started = self._call(mount)
        left = started + self.timeout_s - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"statvfs still blocked (over {self.timeout_s:g} s)")
        done, _ = await asyncio.wait({future}, timeout=left if wait_s is None
                                     else max(0.0, min(left, wait_s)))
        if done:
            return future.result()
        if time.monotonic() - started >= self.timeout_s:
            raise TimeoutError(f"statvfs timed out after {self.timeout_s:g} s")
        raise _StillRunning(mount)

    def _call(self, mount: str) -> tuple[asyncio.Future[DiskSample], float]:
        running = self._running.get(mount)
        if running is not None and not running[0].done():
            return running
        future = _in_daemon_thread(mount)
        future.add_done_callback(_retrieve)
        self._running[mount] = (future, time.monotonic())
        return self._running[mount]

    def _failed(self, mount: str, message: str) -> None:
        if self._errors.get(mount) != message:
            log.warning("disk %s not sampled: %s", mount, message)
            self._errors[mount] = message

    def close(self) -> None:
        """Detach from calls still blocked (their threads finish on their own)."""
        for future, _started in self._running.values():
            future.cancel()
        self._running.clear()


class _StillRunning(Exception):
    """A mount's call outlasted a read's ``wait_s`` but not ``timeout_s``."""


def _in_daemon_thread(mount: str) -> asyncio.Future[DiskSample]:
    """:func:`disk_usage` of ``mount`` in a new daemon thread; its result as a future."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[DiskSample] = loop.create_future()

    def run() -> None:
        try:
            outcome: DiskSample | BaseException = disk_usage(mount)
        except Exception as exc:
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(_settle, future, outcome)

    threading.Thread(target=run, name=f"statvfs {mount}", daemon=True).start()
    return future


def _settle(future: asyncio.Future[DiskSample], outcome: DiskSample | BaseException) -> None:
    if future.done():  # cancelled by DiskReader.close()
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _retrieve(future: asyncio.Future[DiskSample]) -> None:
    """Mark a finished call's exception as retrieved (no "never retrieved" noise)."""
    if not future.cancelled():
        future.exception()
