"""Who may connect, what a refused request leaves in the journal, and the sudo break-glass.

Three users are created in the container:

``outsider``  in no vm-agent group.  The socket is 0660 root:vm-agent in a
              0750 root:vm-agent folder, so the kernel refuses the connection
              (EACCES) before the agent sees anything: there is no request and
              so, honestly, no audit entry; the test checks the refusal and
              that no entry names the user.  With those modes loosened by hand
              (an admin's mistake), its connection reaches the agent, which
              refuses every command 403 (role none) and audits the refusal.
``viewer``    in group vm-agent only: role viewer (access.viewer.groups in the
              shipped config).  Its GETs are answered; an operator command
              (PUT /v1/hold) is refused 403 and audited with role viewer,
              result forbidden: the refused request the journal shows.
``ops``       in group vm-agent-ops only: sudoers.d/vm-agent lets it run the
              break-glass commands as root, and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.box import SOCKET, Done, SystemdBox, wait_until

pytestmark = pytest.mark.e2e

#: Every request entry carries these (agent/audit.py event_fields); PEER_PID when known.
REQUEST_FIELDS = {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "VMAGENT_COMMAND",
                  "VMAGENT_PEER_UID", "VMAGENT_PEER_GID", "VMAGENT_PEER_PID", "VMAGENT_ROLE",
                  "VMAGENT_RESULT", "VMAGENT_REQUEST_ID", "VMAGENT_DURATION_MS",
                  "VMAGENT_ARGS"}
USERS = {"outsider": "", "viewer": "vm-agent", "ops": "vm-agent-ops"}
CTL = "/usr/local/bin/vm-agentctl"


@pytest.fixture(scope="module")
def uids(box: SystemdBox) -> dict[str, int]:
    """The three users (created once), name -> uid."""
    for name, group in USERS.items():
        if box.run(["id", "-u", name], check=False).rc != 0:
            box.run(["useradd", "--no-create-home", "--shell", "/bin/sh",
                     *(["--groups", group] if group else []), name])
    return {name: int(box.run(["id", "-u", name]).out) for name in USERS}


def _as(box: SystemdBox, user: str, *argv: str) -> Done:
    return box.run(["runuser", "-u", user, "--", *argv], check=False, timeout_s=60)


def _journal(box: SystemdBox, *matches: str) -> list[dict[str, str]]:
    out = box.run(["journalctl", "--no-pager", "-t", "vm-agent", "-o", "json",
                   *matches]).out
    return [json.loads(line) for line in out.splitlines()]


def _entry(box: SystemdBox, request_id: str) -> dict[str, str]:
    found = wait_until(lambda: _journal(box, f"VMAGENT_REQUEST_ID={request_id}"),
                       timeout_s=10, what=f"audit entry of request {request_id}")
    assert len(found) == 1, found
    return found[0]


def _curl(box: SystemdBox, user: str, method: str, path: str,
          body: str | None = None) -> tuple[int, dict[str, object]]:
    argv = ["curl", "-s", "-m", "30", "--unix-socket", SOCKET, "-X", method,
            "-w", "\n%{http_code}", f"http://localhost{path}"]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "-d", body]
    done = box.run(["runuser", "-u", user, "--", *argv], check=False, timeout_s=60)
    assert done.rc == 0, repr(done)
    text, code = done.out.rsplit("\n", 1)
    return int(code), json.loads(text)


def test_socket_and_folder_modes(box: SystemdBox) -> None:
    stat = box.run(["stat", "-c", "%a %U:%G %F", "/run/vm-agent", SOCKET]).out.splitlines()
    assert stat == ["750 root:vm-agent directory", "660 root:vm-agent socket"]


def test_non_member_cannot_even_connect(box: SystemdBox, uids: dict[str, int]) -> None:
    ctl = _as(box, "outsider", CTL, "health")
    assert ctl.rc == 3, repr(ctl)  # UNKNOWN: no answer
    assert "permission denied" in ctl.err, repr(ctl)
    raw = _as(box, "outsider", "python3", "-c",
              "import socket; s = socket.socket(socket.AF_UNIX)\n"
              f"try: s.connect({SOCKET!r})\n"
              "except PermissionError as e: print('EACCES', e.errno)")
    assert raw.out.split() == ["EACCES", "13"], repr(raw)
    assert _journal(box, f"VMAGENT_PEER_UID={uids['outsider']}") == []


@pytest.fixture
def loosened_socket(box: SystemdBox) -> Iterator[None]:
    """An admin's mistake: the socket and its folder opened to everyone, then restored."""
    box.run(["chmod", "0755", "/run/vm-agent"])
    box.run(["chmod", "0666", SOCKET])
    yield
    box.run(["chmod", "0660", SOCKET])
    box.run(["chmod", "0750", "/run/vm-agent"])


def test_non_member_refused_by_the_agent_when_the_socket_is_open(
        box: SystemdBox, uids: dict[str, int], loosened_socket: None) -> None:
    """Defence in depth: with the file modes loosened, the outsider connects, and the
    agent itself refuses every command (role none) and audits the refusal."""
    for method, path in (("GET", "/v1/health"), ("PUT", "/v1/hold"), ("GET", "/v1/nope")):
        code, reply = _curl(box, "outsider", method, path, "{}" if method == "PUT" else None)
        assert code == 403, reply
        assert reply["error"]["code"] == "forbidden"  # type: ignore[index]
        refused = _entry(box, str(reply["request_id"]))
        assert refused.keys() >= REQUEST_FIELDS, sorted(refused)
        assert (refused["VMAGENT_ROLE"], refused["VMAGENT_RESULT"]) == ("none", "forbidden")
        assert refused["VMAGENT_PEER_UID"] == str(uids["outsider"])
    assert box.json([CTL, "--json", "hold"])["active"] is False


def test_viewer_refused_operator_command_is_audited(box: SystemdBox,
                                                   uids: dict[str, int]) -> None:
    code, reply = _curl(box, "viewer", "GET", "/v1/health")
    assert code == 200 and reply["ok"] is True
    allowed = _entry(box, str(reply["request_id"]))
    assert (allowed["VMAGENT_ROLE"], allowed["VMAGENT_RESULT"]) == ("viewer", "ok")

    code, reply = _curl(box, "viewer", "PUT", "/v1/hold", '{"reason": "e2e viewer try"}')
    assert code == 403, reply
    assert reply["error"]["code"] == "forbidden"  # type: ignore[index]
    refused = _entry(box, str(reply["request_id"]))
    assert refused.keys() >= REQUEST_FIELDS, sorted(refused)
    assert refused["SYSLOG_IDENTIFIER"] == "vm-agent"
    assert refused["VMAGENT_COMMAND"] == "hold.set"
    assert refused["VMAGENT_RESULT"] == "forbidden"
    assert refused["VMAGENT_ROLE"] == "viewer"
    assert refused["VMAGENT_PEER_UID"] == str(uids["viewer"])
    assert refused["PRIORITY"] == "4"  # warning: a refusal
    assert float(refused["VMAGENT_DURATION_MS"]) >= 0
    # the role check comes before the body is read, so ARGS may be empty; still JSON
    assert isinstance(json.loads(refused["VMAGENT_ARGS"]), dict)
    # vm-agentctl says the same, exit 2 (a change refused)
    ctl = _as(box, "viewer", CTL, "hold", "e2e", "viewer")
    assert ctl.rc == 2 and "forbidden" in ctl.err, repr(ctl)
    assert box.json([CTL, "--json", "hold"])["active"] is False


def test_every_request_entry_has_the_vmagent_fields(box: SystemdBox) -> None:
    code, reply = _curl(box, "root", "GET", "/v1/version")
    assert code == 200
    entry = _entry(box, str(reply["request_id"]))
    assert entry.keys() >= REQUEST_FIELDS, sorted(entry)
    assert (entry["VMAGENT_COMMAND"], entry["VMAGENT_ROLE"], entry["VMAGENT_RESULT"],
            entry["VMAGENT_PEER_UID"]) == ("version", "operator", "ok", "0")
    assert entry["_SYSTEMD_UNIT"] == "vm-agent.service"
    every = _journal(box, "VMAGENT_COMMAND=health")
    assert every and all(REQUEST_FIELDS - {"VMAGENT_PEER_PID"} <= e.keys() for e in every)


@pytest.fixture
def no_hold(box: SystemdBox) -> Iterator[None]:
    """Whatever the test does, no maintenance hold is left (later jobs would be locked)."""
    yield
    box.run([CTL, "unhold"], check=False)


def test_ops_member_runs_break_glass_commands_through_sudo(
        box: SystemdBox, uids: dict[str, int], no_hold: None) -> None:
    listed = _as(box, "ops", "sudo", "-n", "-l")
    assert listed.rc == 0, repr(listed)
    commands = listed.out.split("may run the following commands", 1)[1]
    assert "NOPASSWD" in commands and f"{CTL} unhold" in commands
    assert f"{CTL} run cleanup --mode weekly --dry-run" in commands
    assert " ALL\n" not in commands and "(ALL" not in commands

    held = _as(box, "ops", "sudo", "-n", CTL, "hold", "e2e", "break", "glass")
    assert held.rc == 0, repr(held)
    hold = box.json([CTL, "--json", "hold"])
    assert (hold["active"], hold["reason"]) == (True, "e2e break glass")
    dry = _as(box, "ops", "sudo", "-n", CTL, "run", "cleanup", "--dry-run")
    # under the hold a dry run still runs (only a real cleanup is refused 423): ok or partial
    assert dry.rc in (0, 1) and "cleanup" in dry.out, repr(dry)
    unheld = _as(box, "ops", "sudo", "-n", CTL, "unhold")
    assert unheld.rc == 0, repr(unheld)
    assert box.json([CTL, "--json", "hold"])["active"] is False


@pytest.mark.parametrize("argv", [
    ["id", "-u"],
    [CTL, "run", "watchdog"],
    [CTL, "run", "cleanup", "--socket", "/tmp/other.sock"],
    [CTL, "hold", "--socket", "/tmp/other.sock", "x"],
    [CTL, "restart", "web"],
    ["/bin/sh", "-c", "id -u"],
])
def test_ops_member_may_sudo_nothing_else(box: SystemdBox, uids: dict[str, int],
                                          argv: list[str]) -> None:
    done = _as(box, "ops", "sudo", "-n", *argv)
    assert done.rc == 1, repr(done)
    assert "a password is required" in done.err, repr(done)
    assert done.out.strip() != "0"


def test_viewer_may_not_sudo_break_glass(box: SystemdBox, uids: dict[str, int]) -> None:
    done = _as(box, "viewer", "sudo", "-n", CTL, "unhold")
    assert done.rc == 1 and "a password is required" in done.err, repr(done)
