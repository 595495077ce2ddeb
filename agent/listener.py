"""The listening socket: handed over by systemd, or bound by hand.

Run by hand, the agent binds its own socket but never steals one: when a
process already answers on the path, start-up fails; when the path is a
socket nobody listens on (a crash left it), it is replaced.  Anything else
at that path (a regular file, a folder) is left alone and reported.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import socket
import stat
from pathlib import Path

from agent.systemd import listen_fds

log = logging.getLogger("vm-agent")


class SocketInUse(Exception):
    """Another process answers on the socket path, or the path is not a socket."""


def _is_live(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    finally:
        probe.close()
    return True


def _clear_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(f"{path} exists and is not a socket; not touching it")
    if _is_live(path):
        raise SocketInUse(f"another process is listening on {path}; not stealing it")
    log.warning("replacing stale socket %s", path)
    os.unlink(path)


def bind_unix(path: str, *, mode: int = 0o660, group: str | None = "vm-agent") -> socket.socket:
    """Bind and listen on ``path`` (mode ``mode``, group ``group`` when it exists).

    Raises SocketInUse when a live socket or a non-socket is at ``path``;
    OSError for other failures (no permission, path too long).
    """
    Path(path).parent.mkdir(mode=0o750, parents=True, exist_ok=True)  # PROTOCOL.md: 0750
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o777 ^ mode)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        _chgrp(path, group)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _chgrp(path: str, group: str | None) -> None:
    if group is None:
        return
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return
    with contextlib.suppress(PermissionError):
        os.chown(path, -1, gid)


def acquire(path: str, *, mode: int) -> tuple[socket.socket, bool]:
    """The socket to serve on and whether systemd handed it over.

    Uses the first ``LISTEN_FDS`` socket when this process was
    socket-activated (sd_listen_fds(3)); otherwise binds ``path`` itself.
    """
    handed = listen_fds(unset_environment=True)
    if handed:
        for extra in handed[1:]:
            log.warning("ignoring extra socket fd %d from systemd", extra.fileno())
        return handed[0], True
    return bind_unix(path, mode=mode), False
