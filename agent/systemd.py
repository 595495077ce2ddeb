"""systemd glue: socket activation and service notifications.

* :func:`listen_fds` is ``sd_listen_fds(3)``: sockets systemd passed from fd 3.
* :class:`Notifier` is ``sd_notify(3)`` over the ``sdnotify`` package
  (``READY=1``, ``STATUS=``, ``WATCHDOG=1``, ``STOPPING=1``); a failed notify
  is logged at warning on the ``vm-agent`` logger, never raised.
* :func:`watchdog_interval_s` is ``sd_watchdog_enabled(3)`` halved, and
  :func:`watchdog_loop` pings from the event loop, so a hung loop stops the
  pings and systemd restarts the service.

The journal writer lives in :mod:`agent.journal`.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

from sdnotify import SystemdNotifier

from agent.errors import Internal

log = logging.getLogger("vm-agent")

#: First passed descriptor (``SD_LISTEN_FDS_START`` in ``sd-daemon.h``).
SD_LISTEN_FDS_START: Final = 3
_LISTEN_VARS: Final = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ListenFdsError(Internal):
    """``LISTEN_PID`` or ``LISTEN_FDS`` is not a valid number (``sd_listen_fds`` -EINVAL)."""


def _parse_int(environ: Mapping[str, str], name: str) -> int:
    raw = environ[name]
    try:
        value = int(raw, 10)
    except ValueError:
        raise ListenFdsError(f"{name}={raw!r} is not a number", {"variable": name}) from None
    if value < 0:
        raise ListenFdsError(f"{name}={raw!r} is negative", {"variable": name})
    return value


def _passed_count(environ: Mapping[str, str]) -> int:
    """How many fds are ours: 0 unless ``LISTEN_PID`` is this process."""
    if "LISTEN_PID" not in environ:
        return 0
    if _parse_int(environ, "LISTEN_PID") != os.getpid():
        return 0
    return _parse_int(environ, "LISTEN_FDS") if "LISTEN_FDS" in environ else 0


def _adopt(fd: int) -> socket.socket:
    """Mark ``fd`` close-on-exec and wrap it; family and type are read from the fd."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFD)
    fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
    return socket.socket(fileno=fd)


def listen_fds(*, unset_environment: bool = True,
               environ: MutableMapping[str, str] = os.environ) -> list[socket.socket]:
    """Sockets systemd passed to this process (``man 3 sd_listen_fds``).

    Only when ``LISTEN_PID`` equals ``os.getpid()``: ``LISTEN_FDS`` descriptors
    starting at fd 3, each set ``FD_CLOEXEC`` and returned as a
    ``socket.socket`` in fd order.  With ``unset_environment`` the three
    ``LISTEN_*`` variables are removed from ``environ`` whatever the outcome,
    so children never see them.  No variables, or another process's pid,
    gives ``[]``.  Raises :class:`ListenFdsError` when ``LISTEN_PID`` or
    ``LISTEN_FDS`` is not a non-negative decimal number: that is a broken unit,
    and binding a socket of our own instead would hide it.
    """
    try:
        count = _passed_count(environ)
    finally:
        if unset_environment:
            for name in _LISTEN_VARS:
                environ.pop(name, None)
    return [_adopt(fd) for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)]


def watchdog_interval_s(*, environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC``, else ``None``.

    ``None`` when ``WATCHDOG_USEC`` is unset, 0 or invalid (logged), or when
    ``WATCHDOG_PID`` is set to another process (``man 3 sd_watchdog_enabled``
    recommends pinging at half the timeout).
    """
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    raw = environ.get("WATCHDOG_USEC")
    if raw is None:
        return None
    try:
        usec = int(raw, 10)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number", raw)
        return None
    return usec / 2_000_000 if usec > 0 else None


def one_line(text: str) -> str:
    """``text`` with line breaks folded to spaces (a ``STATUS=`` value is one line)."""
    return " ".join(text.splitlines()).strip()


class Notifier:
    """``sd_notify(3)`` to ``$NOTIFY_SOCKET`` (a path or an abstract ``@name``).

    ``NOTIFY_SOCKET`` is read from ``os.environ`` (``sdnotify`` reads it
    there).  A no-op when it is unset.  Each failure (socket missing,
    refused, full) is logged at warning and the connection is re-made on the
    next call; nothing raises.  The socket is non-blocking so the event loop
    never waits on systemd.
    """

    #: seconds between warnings about the same failure (WATCHDOG=1 may fail every few seconds)
    REPEAT_WARNING_S = 300.0

    def __init__(self) -> None:
        self._notifier: Any = None
        self._last_failure: tuple[str, float] | None = None

    @property
    def enabled(self) -> bool:
        """True when ``NOTIFY_SOCKET`` is set."""
        return bool(os.environ.get("NOTIFY_SOCKET"))

    def ready(self, status: str) -> bool:
        """``READY=1`` with a ``STATUS=`` line; True if sent."""
        return self.notify(f"READY=1\nSTATUS={one_line(status)}")

    def status(self, text: str) -> bool:
        """``STATUS=`` with ``text`` folded to one line; True if sent."""
        return self.notify(f"STATUS={one_line(text)}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``; True if sent."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """``STOPPING=1``; True if sent."""
        return self.notify("STOPPING=1")

    def watchdog_interval_s(self) -> float | None:
        """:func:`watchdog_interval_s` of ``os.environ``."""
        return watchdog_interval_s(environ=os.environ)

    def notify(self, state: str) -> bool:
        """Send one raw state string; False (and a warning) on failure or when disabled."""
        if not self.enabled:
            return False
        try:
            self._connected().notify(state)
        except Exception as exc:  # sdnotify(debug=True) re-raises whatever failed
            self._notifier = None
            self._warn(state.split("\n", 1)[0], exc)
            return False
        if self._last_failure is not None:
            log.info("sd_notify works again")
            self._last_failure = None
        return True

    def _warn(self, state: str, exc: Exception) -> None:
        """Log a failure; the same failure again is logged once per REPEAT_WARNING_S."""
        now, key = time.monotonic(), f"{type(exc).__name__}: {exc}"
        if self._last_failure and self._last_failure[0] == key \
                and now - self._last_failure[1] < self.REPEAT_WARNING_S:
            return
        self._last_failure = (key, now)
        log.warning("sd_notify %r to %s failed: %s (repeats are logged every %.0f s)", state,
                    os.environ.get("NOTIFY_SOCKET"), key, self.REPEAT_WARNING_S)

    def _connected(self) -> Any:
        if self._notifier is None:
            notifier = SystemdNotifier(debug=True)  # connects; raises on failure
            notifier.socket.setblocking(False)
            self._notifier = notifier
        return self._notifier


async def watchdog_loop(notifier: Notifier, interval_s: float) -> None:
    """Send ``WATCHDOG=1`` every ``interval_s`` seconds from the running loop, until cancelled.

    The first ping goes at once.  Because it runs on the event loop, a loop
    that hangs stops pinging and systemd's ``WatchdogSec=`` fires.
    """
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval_s)
