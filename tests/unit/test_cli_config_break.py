"""Breaking config loading and ``vm-agentctl`` as operators do (issue 2 and the CLI of 3-6).

Config: every bad file must end in :class:`ConfigError` (``vm-agent`` exits 78) naming the
file, never a traceback, a hang or a silently accepted value.  CLI: ``vm-agentctl`` run as a
real process against real Unix sockets served by small stand-in servers (a garbage answer, a
server that never answers), checking exit codes, ``--json`` output and the absence of
tracebacks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.configload import load_config
from agent.errors import ConfigError

NO_ENV: dict[str, str] = {}
REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _error(base: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(base, environ=NO_ENV)
    return info.value


# ---------------------------------------------------------------- YAML content

def test_billion_laughs_fails_fast_instead_of_hanging(tmp_path: Path) -> None:
    rows = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        rows.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    base = _write(tmp_path / "vm-agent.yaml", "\n".join(rows) + "\n")
    started = time.monotonic()
    err = _error(base)
    assert time.monotonic() - started < 5
    assert str(base) in str(err) and "alias" in str(err)


def test_a_few_aliases_still_load(tmp_path: Path) -> None:
    base = _write(tmp_path / "vm-agent.yaml", "thresholds:\n  steal_percent: &t {warn: 3, "
                  "crit: 9}\n  iowait_percent: *t\n")
    cfg = load_config(base, environ=NO_ENV)
    assert cfg.thresholds.iowait_percent.crit == 9


def test_recursive_alias_is_a_config_error(tmp_path: Path) -> None:
    base = _write(tmp_path / "vm-agent.yaml", "sampling:\n  disks: &d [/, *d]\n")
    err = _error(base)
    assert f"{base}:2" in str(err) and "alias" in str(err)


def test_control_character_is_a_config_error(tmp_path: Path) -> None:
    base = _write(tmp_path / "vm-agent.yaml", b'alerts:\n  host_name: "a\x01b"\n')
    err = _error(base)
    assert f"{base}:2" in str(err) and "#x0001" in str(err)


@pytest.mark.parametrize("text", ["a: " + "[" * 3000 + "]" * 3000,
                                  "a: " + "{b: " * 3000 + "1" + "}" * 3000])
def test_deep_nesting_is_a_config_error(tmp_path: Path, text: str) -> None:
    base = _write(tmp_path / "vm-agent.yaml", text + "\n")
    err = _error(base)
    assert str(base) in str(err) and "nested" in str(err)


def test_sexagesimal_is_not_an_integer(tmp_path: Path) -> None:
    """YAML 1.1 reads ``1:30`` as 90; here it is the string it looks like, so refused."""
    base = _write(tmp_path / "vm-agent.yaml", "server:\n  max_connections: 1:30\n")
    err = _error(base)
    assert err.key == "server.max_connections"
    assert "string '1:30'" in str(err) and f"{base}:2" in str(err)


@pytest.mark.parametrize("text", ['state_dir: "/var/lib/x\\0y"\n',
                                  'alerts:\n  host_name: "a\\0b"\n'])
def test_nul_character_in_a_string_is_refused(tmp_path: Path, text: str) -> None:
    base = _write(tmp_path / "vm-agent.yaml", text)
    err = _error(base)
    assert "NUL" in str(err) and str(base) in str(err)


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    base = _write(tmp_path / "vm-agent.yaml", b'server: {}\nalerts:\n  host_name: "caf\xe9"\n')
    err = _error(base)
    assert f"{base}:3" in str(err) and "UTF-8" in str(err)


# ---------------------------------------------------------------- files and conf.d

def _unreadable_load(base: Path) -> subprocess.CompletedProcess[str]:
    """``vm-agent check-config`` without DAC override (root reads anything otherwise)."""
    argv = [sys.executable, "-m", "agent.daemon", "check-config", "--config", str(base)]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE as root")
        drop = "-dac_override,-dac_read_search"
        argv = ["setpriv", "--bounding-set", drop, "--inh-caps", drop, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=False)


def test_unreadable_confd_folder_fails_with_78(tmp_path: Path) -> None:
    base = _write(tmp_path / "vm-agent.yaml", "server: {}\n")
    _write(tmp_path / "conf.d" / "50-host.yaml", "server:\n  max_connections: 7\n")
    (tmp_path / "conf.d").chmod(0)
    try:
        done = _unreadable_load(base)
    finally:
        (tmp_path / "conf.d").chmod(0o755)
    assert done.returncode == 78, done.stdout + done.stderr
    assert "conf.d" in done.stderr and "Traceback" not in done.stderr


def test_unreadable_config_file_fails_with_78(tmp_path: Path) -> None:
    base = _write(tmp_path / "vm-agent.yaml", "server: {}\n")
    base.chmod(0)
    done = _unreadable_load(base)
    assert done.returncode == 78, done.stdout + done.stderr
    assert str(base) in done.stderr and "Traceback" not in done.stderr


def test_confd_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    base = _write(tmp_path / "vm-agent.yaml", "server: {}\n")
    _write(tmp_path / "conf.d", "server:\n  max_connections: 7\n")
    err = _error(base)
    assert str(tmp_path / "conf.d") in str(err) and "not a folder" in str(err)


@pytest.mark.parametrize("kind", ["dangling symlink", "folder"])
def test_confd_yaml_that_is_not_a_file_is_an_error(tmp_path: Path, kind: str) -> None:
    base = _write(tmp_path / "vm-agent.yaml", "server: {}\n")
    entry = tmp_path / "conf.d" / "50-host.yaml"
    entry.parent.mkdir()
    if kind == "folder":
        entry.mkdir()
    else:
        entry.symlink_to(tmp_path / "gone.yaml")
    err = _error(base)
    assert str(entry) in str(err)


def test_editor_leftovers_in_confd_are_ignored(tmp_path: Path) -> None:
    base = _write(tmp_path / "vm-agent.yaml", "server: {}\n")
    confd = tmp_path / "conf.d"
    _write(confd / "50-host.yaml", "server:\n  max_connections: 7\n")
    for junk in ("50-host.yaml~", "#50-host.yaml#", ".50-host.yaml.swp", ".hidden.yaml",
                 "50-host.yaml.dpkg-old"):
        _write(confd / junk, "server: [broken\n")
    (confd / ".#50-host.yaml").symlink_to("root@host.1234")  # emacs lock: dangling, hidden
    assert load_config(base, environ=NO_ENV).server.max_connections == 7


# ---------------------------------------------------------------- vm-agentctl

class _StubServer:
    """A Unix socket that answers every request with ``reply`` (raw bytes) or never."""

    def __init__(self, path: Path, reply: bytes | None) -> None:
        self.reply = reply
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            with contextlib.suppress(OSError):
                conn.recv(65536)
                if self.reply is not None:
                    conn.sendall(self.reply)
                    conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.conns:
            conn.close()
        self.thread.join(5)


def _http(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body)) + body


@contextlib.contextmanager
def _stub(short_tmp: Path, reply: bytes | None) -> Iterator[Path]:
    path = short_tmp / "stub.sock"
    server = _StubServer(path, reply)
    try:
        yield path
    finally:
        server.close()


def _ctl(*args: str, stdout: int | None = subprocess.PIPE,
         timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=REPO,
                          stdout=stdout, stderr=subprocess.PIPE, timeout=timeout, check=False)


GARBAGE = {
    "a list": b"[1, 2, 3]",
    "null": b"null",
    "ok without data": b'{"ok": true}',
    "error as a string": b'{"ok": false, "error": "boom"}',
    "health data of the wrong shape": b'{"ok": true, "data": {"status": "OK"}}',
    "data as a list": b'{"ok": true, "data": [1, "x"]}',
    "NaN": b'{"ok": true, "data": {"status": "OK", "x": NaN}}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("json_flag", [False, True])
@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_reply_is_unknown_not_a_traceback(short_tmp: Path, name: str,
                                                   json_flag: bool) -> None:
    with _stub(short_tmp, _http(GARBAGE[name])) as path:
        done = _ctl("--socket", str(path), *(["--json"] if json_flag else []), "health")
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    if json_flag and name == "health data of the wrong shape":
        # --json prints data without rendering it: only status matters (OK -> 0)
        assert done.returncode == 0 and json.loads(done.stdout) == {"status": "OK"}
        return
    assert done.returncode == 3, done.stderr.decode()
    assert b"UNKNOWN" in done.stderr
    if json_flag:
        assert json.loads(done.stdout)["code"] == "unreachable"


@pytest.mark.parametrize("where", ["missing", "regular file", "folder"])
def test_json_on_unreachable_is_json(short_tmp: Path, where: str) -> None:
    path = short_tmp / "agent.sock"
    if where == "regular file":
        path.write_text("")
    elif where == "folder":
        path.mkdir()
    done = _ctl("--socket", str(path), "--json", "health")
    assert done.returncode == 3
    err = json.loads(done.stdout)
    assert err["code"] == "unreachable" and str(path) in err["message"]
    if where != "missing":
        assert "not a socket" in err["message"]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e400"])
def test_bad_timeout_is_a_usage_error(short_tmp: Path, value: str) -> None:
    with _stub(short_tmp, None) as path:
        done = _ctl("--socket", str(path), "--timeout", value, "health", timeout=20)
    assert done.returncode == 3 and b"--timeout" in done.stderr
    assert b"Traceback" not in done.stderr


@pytest.mark.parametrize("args", [["logs", "a\udcff"], ["runs", "a\udcff"],
                                  ["hold", "\udcff\udcfe"], ["containers", "--stack", "\udcff"],
                                  ["ollama", "impact", "m\udcff"]])
def test_non_utf8_argument_is_a_usage_error(short_tmp: Path, args: list[str]) -> None:
    argv = [os.fsencode(a) for a in args]
    with _stub(short_tmp, _http(b'{"ok": true, "data": {}}')) as path:
        done = subprocess.run([sys.executable, "-m", "agent.cli", "--socket", str(path), *argv],
                              cwd=REPO, capture_output=True, timeout=60, check=False)
    assert done.returncode == 3 and b"UTF-8" in done.stderr, done.stderr.decode()
    assert b"Traceback" not in done.stderr


def test_sigint_mid_request_is_no_traceback(short_tmp: Path) -> None:
    with _stub(short_tmp, None) as path:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--socket", str(path),
                                 "health"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _connected(proc.pid):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err, err.decode()
    assert proc.returncode == 130 and b"interrupted" in err


def _connected(pid: int) -> bool:
    """True once ``pid`` holds a Unix socket (it is mid-request)."""
    with contextlib.suppress(OSError):
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    return False


@pytest.mark.parametrize("json_flag", [False, True])
def test_broken_pipe_is_no_traceback(short_tmp: Path, json_flag: bool) -> None:
    reply = _http(b'{"ok": true, "data": {"version": "0.1.0", "uptime_s": 1}}')
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written (| head, | true)
    with _stub(short_tmp, reply) as path:
        done = _ctl("--socket", str(path), *(["--json"] if json_flag else []), "version",
                    stdout=write_end)
    os.close(write_end)
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    assert done.returncode == 0


def test_full_disk_on_stdout_is_unknown(short_tmp: Path) -> None:
    reply = _http(b'{"ok": true, "data": {"version": "0.1.0"}}')
    with _stub(short_tmp, reply) as path, open("/dev/full", "wb") as full:
        done = _ctl("--socket", str(path), "version", stdout=full.fileno())
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    assert done.returncode == 3 and b"No space left" in done.stderr


@pytest.mark.parametrize(("text", "key"), [
    ("docker:\n  cgroup_root: sys/fs/cgroup\n", "docker.cgroup_root"),
    ("cleanup:\n  apt_cache_dir: var/cache/apt\n", "cleanup.apt_cache_dir"),
    ("cleanup:\n  journal_directory: journal\n", "cleanup.journal_directory"),
    ("jobs:\n  schedule:\n    legacy_crontabs: [crontab]\n", "jobs.schedule.legacy_crontabs[0]"),
])
def test_relative_folder_is_refused(tmp_path: Path, text: str, key: str) -> None:
    """A relative path would be read against the working folder ('/' under systemd)."""
    err = _error(_write(tmp_path / "vm-agent.yaml", text))
    assert err.key == key and "absolute path" in str(err) and str(tmp_path) in str(err)


def test_messages_say_absolute_path_and_octal_in_words(tmp_path: Path) -> None:
    from agent.configload import load_config
    from agent.errors import ConfigError
    for text, words in (("state_dir: relative/dir\n", "an absolute path (starting with /)"),
                        ("server:\n  socket_mode: 660\n", "for the mode 660, write 0660")):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(str(path))
        assert words in str(caught.value)
