"""Who is calling, and what they may do.

The peer of a Unix socket connection is identified by ``SO_PEERCRED``
(``man 7 unix``): the pid, uid and gid of the process that connected.
Supplementary groups count too, so a user whose *secondary* group is
``vm-agent`` gets the role: they come from ``SO_PEERGROUPS`` (``man 7
socket``, Linux 4.13), which the kernel records at ``connect()`` like the
uid.  They are never read from ``/proc/<pid>/status`` while the kernel gives
them: that pid may by then be another process (the peer exited and its pid
was reused), whose groups would be granted to the connection.  Only a kernel
without ``SO_PEERGROUPS`` falls back to ``/proc``.  uid 0 is always operator.
"""

from __future__ import annotations

import errno
import grp
import logging
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from agent.config import AccessConfig, RoleConfig

Role = Literal["operator", "viewer", "none"]
log = logging.getLogger("vm-agent")

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
#: ``SO_PEERGROUPS`` (asm-generic/socket.h; Python 3.11 does not name it)
SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)
#: CPython's getsockopt() reads at most 1024 bytes: 256 gid_t
_GROUPS_BUF: Final = 1024


@dataclass(frozen=True)
class Peer:
    """The connecting process; ``pid`` is None when the kernel gave none."""

    pid: int | None
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()

    def describe(self) -> str:
        """``uid=1000 gid=1000 pid=4242`` for records and messages."""
        return f"uid={self.uid} gid={self.gid} pid={self.pid}"


def peer_of(sock: socket.socket, *, proc_root: str = "/proc") -> Peer:
    """The peer of a connected AF_UNIX socket, from ``SO_PEERCRED``.

    Raises OSError when the socket has no peer credentials.
    """
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    pid_or_none = pid if pid > 0 else None
    groups = peer_groups(sock, pid_or_none, proc_root=proc_root) | {gid}
    return Peer(pid=pid_or_none, uid=uid, gid=gid, groups=frozenset(groups))


def peer_groups(sock: socket.socket, pid: int | None, *, proc_root: str = "/proc") -> set[int]:
    """The peer's supplementary group ids as they were at ``connect()`` (``SO_PEERGROUPS``).

    A peer in more than 256 groups gets none of them (a warning is logged:
    failing closed); a kernel without ``SO_PEERGROUPS`` (before 4.13) falls
    back to :func:`supplementary_groups`.  Raises OSError on other errors.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _GROUPS_BUF)
    except OSError as exc:
        if exc.errno == errno.ERANGE:
            log.warning("peer pid %s is in more than %d groups; its supplementary groups "
                        "are ignored", pid, _GROUPS_BUF // 4)
            return set()
        if exc.errno != errno.ENOPROTOOPT:
            raise
        return supplementary_groups(pid, proc_root)
    return set(struct.unpack(f"{len(raw) // 4}I", raw))


def supplementary_groups(pid: int | None, proc_root: str = "/proc") -> set[int]:
    """Group ids from the ``Groups:`` line of ``/proc/<pid>/status``; empty when unreadable.

    Racy (the pid may be reused once the peer exits): only for kernels without
    ``SO_PEERGROUPS``; see :func:`peer_groups`.
    """
    if pid is None:
        return set()
    try:
        text = (Path(proc_root) / str(pid) / "status").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("Groups:"):
            return {int(g) for g in line.split()[1:] if g.isdigit()}
    return set()


@dataclass(frozen=True)
class _RoleMembers:
    uids: frozenset[int]
    gids: frozenset[int]

    def admits(self, peer: Peer) -> bool:
        return peer.uid in self.uids or bool(self.gids & (peer.groups | {peer.gid}))


def _resolve(role: RoleConfig, name: str) -> _RoleMembers:
    gids = set(role.gids)
    for group in role.groups:
        try:
            gids.add(grp.getgrnam(group).gr_gid)
        except KeyError:
            log.warning("access.%s.groups: group %r does not exist on this host; ignored",
                        name, group)
    return _RoleMembers(uids=frozenset(role.uids), gids=frozenset(gids))


class AccessPolicy:
    """Maps a :class:`Peer` to a role; group names are resolved once, at start-up."""

    def __init__(self, access: AccessConfig) -> None:
        self._operator = _resolve(access.operator, "operator")
        self._viewer = _resolve(access.viewer, "viewer")

    def role_of(self, peer: Peer) -> Role:
        """``operator`` for uid 0 and operator members, then ``viewer``, else ``none``."""
        if peer.uid == 0 or self._operator.admits(peer):
            return "operator"
        if self._viewer.admits(peer):
            return "viewer"
        return "none"


def may_run(role: Role, needed: Literal["viewer", "operator"]) -> bool:
    """Whether ``role`` may run a command that needs ``needed``."""
    if role == "operator":
        return True
    return role == "viewer" and needed == "viewer"
