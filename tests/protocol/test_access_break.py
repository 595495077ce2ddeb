"""Breaking the peer-to-role mapping with real peers: other uids, exited peers, reused pids.

The pid-reuse test runs in a pid namespace of its own (``unshare --pid
--fork --mount-proc``: its own /proc and pid counter, gone when it ends), so
it can hand a peer's pid to another process on purpose, as pid wrap-around
does on a busy host, without touching the machine's pid allocation.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.api.access import AccessPolicy, Peer, peer_of
from agent.config import AccessConfig, RoleConfig
from tests.protocol.conftest import CLIENT_PYTHON, Agent, request, require_root

REPO = str(Path(__file__).resolve().parents[2])
OPS_GID = 4242          # a gid no test user has: the operator group of these tests
VIEWER_UID = 65534

# Pid 1 of a new pid namespace: a peer (uid 65534, no supplementary group) connects
# and exits while a child of it keeps the connection open; its pid then goes to a
# process in the operator group (ns_last_pid); only then is the connection accepted.
_PID_REUSE = """
import json, os, socket, sys, time
sys.path.insert(0, sys.argv[1])
from agent.api.access import peer_of
path, ops_gid, uid = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
listener = socket.socket(socket.AF_UNIX); listener.bind(path)
os.chmod(path, 0o777); listener.listen(4)
peer = os.fork()
if peer == 0:
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
    conn = socket.socket(socket.AF_UNIX); conn.connect(path)
    if os.fork() == 0:
        time.sleep(10); os._exit(0)
    os._exit(0)
os.waitpid(peer, 0)
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(peer - 1))
other = os.fork()
if other == 0:
    os.setgroups([ops_gid]); os.setgid(uid); os.setuid(uid)
    time.sleep(10); os._exit(0)
time.sleep(0.1)
accepted, _ = listener.accept()
got = peer_of(accepted)
print(json.dumps({"peer": peer, "other": other, "pid": got.pid, "uid": got.uid,
                  "gid": got.gid, "groups": sorted(got.groups)}))
"""


def _policy() -> AccessPolicy:
    return AccessPolicy(AccessConfig(viewer=RoleConfig(uids=(VIEWER_UID,)),
                                     operator=RoleConfig(gids=(OPS_GID,))))


def test_a_reused_pid_does_not_lend_its_groups_to_the_peer(short_tmp: Path) -> None:
    """SO_PEERCRED's pid is the connecting process's, even after it exited; reading the
    groups from /proc/<pid>/status then reads whoever has that pid now (here a process
    in the operator group), and a viewer became operator."""
    require_root()
    unshare = shutil.which("unshare")
    assert unshare, "util-linux unshare is needed for a pid namespace of the test's own"
    proc = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-c", _PID_REUSE, REPO,
         str(short_tmp / "reuse.sock"), str(OPS_GID), str(VIEWER_UID)],
        capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["other"] == seen["peer"] == seen["pid"]  # the pid was reused, as staged
    assert seen["uid"] == VIEWER_UID
    assert OPS_GID not in seen["groups"]
    peer = Peer(pid=seen["pid"], uid=seen["uid"], gid=seen["gid"],
                groups=frozenset(seen["groups"]))
    assert _policy().role_of(peer) == "viewer"


_CONNECT_THEN_EXIT = """
import os, socket, sys, time
conn = socket.socket(socket.AF_UNIX); conn.connect(sys.argv[1])
holder = os.fork()
if holder == 0:
    os.close(1); time.sleep(10); os._exit(0)
print(holder, flush=True)
os._exit(0)
"""


async def test_groups_are_those_at_connect_even_when_the_peer_exited(short_tmp: Path) -> None:
    """The connecting process is gone (its /proc entry too) before the accept: its
    supplementary groups still count, as the kernel kept them with the socket."""
    require_root()
    path = str(short_tmp / "exit.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    os.chmod(path, 0o777)
    listener.listen(4)
    child = await asyncio.create_subprocess_exec(
        CLIENT_PYTHON, "-c", _CONNECT_THEN_EXIT, path, user=VIEWER_UID, group=VIEWER_UID,
        extra_groups=[OPS_GID], cwd="/", stdout=subprocess.PIPE)
    out, _ = await child.communicate()
    holder = int(out)
    try:
        assert child.returncode == 0
        accepted, _ = listener.accept()
        with accepted:
            peer = peer_of(accepted)
        assert peer.pid == child.pid and peer.uid == VIEWER_UID
        assert OPS_GID in peer.groups
        assert _policy().role_of(peer) == "operator"
    finally:
        listener.close()
        os.kill(holder, 9)


@pytest.mark.parametrize("escaped", ["%E2%80%A8", "%E2%80%A9", "%C2%85"])
async def test_a_path_with_a_unicode_line_break_leaves_one_readable_entry(
        agent_server: Agent, escaped: str) -> None:
    """The path of a 404 is recorded in VMAGENT_ARGS; written as a fallback JSON line, a
    raw U+2028 made the entry unreadable line by line (here: Agent.audit_entries raised)."""
    before = len(agent_server.audit_entries())
    status, env = await request(agent_server, "GET", f"/v1/x{escaped}y")
    assert status == 404 and env["error"]["code"] == "not_found"
    await asyncio.sleep(0.05)  # entries are written on the loop pass after the reply
    [entry] = agent_server.audit_entries()[before:]
    assert entry["VMAGENT_REQUEST_ID"] == env["request_id"]
    assert json.loads(entry["VMAGENT_ARGS"])["path"].startswith("/v1/x")
