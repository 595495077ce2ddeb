"""agent.audit and agent.journal against a real datagram socket standing in for journald."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.audit import AuditEvent, Auditor, redact
from agent.journal import (
    InvalidFieldName,
    JournalHandler,
    JournalWriter,
    Outcome,
    encode_entry,
)


def parse_entry(data: bytes) -> dict[str, bytes]:
    """Decode the native protocol independently of agent.journal (JOURNAL_NATIVE_PROTOCOL)."""
    fields: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        line = data[pos:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            pos = end + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[end + 1:end + 9])
            value = data[end + 9:end + 9 + size]
            assert data[end + 9 + size:end + 10 + size] == b"\n"
            pos = end + 10 + size
        assert key.decode() not in fields
        fields[key.decode()] = value
    return fields


class FakeJournald:
    """A bound datagram socket that receives entries (plain or memfd) like journald."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(1.0)

    def receive(self) -> tuple[dict[str, bytes], bool]:
        """One entry and whether it came as a memfd."""
        data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 20, 4)
        if not fds:
            return parse_entry(data), False
        assert data == b"" and len(fds) == 1
        try:
            seals = fcntl.fcntl(fds[0], fcntl.F_GET_SEALS)
            assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
            size = os.fstat(fds[0]).st_size   # journald mmaps it from offset 0
            return parse_entry(os.pread(fds[0], size, 0)), True
        finally:
            os.close(fds[0])

    def pending(self) -> bool:
        self.sock.settimeout(0.05)
        try:
            self.sock.recv(1 << 20, socket.MSG_PEEK)
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(1.0)
        return True


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[FakeJournald]:
    fake = FakeJournald(tmp_path / "journal.sock")
    yield fake
    fake.sock.close()


@pytest.fixture
def writer(journald: FakeJournald) -> Iterator[JournalWriter]:
    w = JournalWriter(str(journald.path), stream=io.StringIO())
    yield w
    w.close()


def _event(**overrides: object) -> AuditEvent:
    values: dict[str, object] = {
        "command": "hold.set", "peer_uid": 1000, "peer_gid": 1001, "peer_pid": 4242,
        "role": "operator", "result": "ok", "request_id": "r-1", "duration_ms": 1.25,
        "args": {"reason": "kernel upgrade",
                 "auth": {"Authorization": "Bearer abc", "nested": [{"api_key": "k"}]},
                 "telegram_bot_token": "123:xyz", "db_password": "pw"}}
    values.update(overrides)
    return AuditEvent(**values)  # type: ignore[arg-type]


def test_audit_entry_has_every_field(journald: FakeJournald, writer: JournalWriter) -> None:
    Auditor(writer).request(_event())
    fields, via_memfd = journald.receive()
    assert not via_memfd
    assert {k: v.decode() for k, v in fields.items() if k != "VMAGENT_ARGS"} == {
        "MESSAGE": "hold.set -> ok (uid 1000, role operator, 1.2 ms)",
        "PRIORITY": "6", "SYSLOG_IDENTIFIER": "vm-agent",
        "VMAGENT_COMMAND": "hold.set", "VMAGENT_PEER_UID": "1000", "VMAGENT_PEER_GID": "1001",
        "VMAGENT_PEER_PID": "4242", "VMAGENT_ROLE": "operator", "VMAGENT_RESULT": "ok",
        "VMAGENT_REQUEST_ID": "r-1", "VMAGENT_DURATION_MS": "1.250"}
    assert json.loads(fields["VMAGENT_ARGS"]) == {
        "reason": "kernel upgrade",
        "auth": {"Authorization": "***", "nested": [{"api_key": "***"}]},
        "telegram_bot_token": "***", "db_password": "***"}
    assert b"xyz" not in fields["VMAGENT_ARGS"] and b"Bearer" not in fields["VMAGENT_ARGS"]


@pytest.mark.parametrize(("result", "priority"), [("ok", 6), ("forbidden", 4),
                                                  ("not_found", 4), ("internal", 3)])
def test_priority_follows_result(journald: FakeJournald, writer: JournalWriter,
                                 result: str, priority: int) -> None:
    Auditor(writer).request(_event(result=result, peer_pid=None))
    fields, _ = journald.receive()
    assert fields["PRIORITY"] == str(priority).encode()
    assert fields["VMAGENT_RESULT"] == result.encode()
    assert "VMAGENT_PEER_PID" not in fields


def test_multiline_message_uses_binary_safe_form(journald: FakeJournald,
                                                 writer: JournalWriter) -> None:
    text = "restart refused\nprotected: caddy\n\x00binary=ok"
    Auditor(writer).request(_event(message=text))
    fields, _ = journald.receive()
    assert fields["MESSAGE"] == text.encode()
    encoded = encode_entry({"MESSAGE": text})
    assert encoded == b"MESSAGE\n" + struct.pack("<Q", len(text)) + text.encode() + b"\n"


def test_entry_larger_than_a_datagram_goes_by_memfd(journald: FakeJournald,
                                                    writer: JournalWriter) -> None:
    sndbuf = writer._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    big = "x" * (sndbuf + 4096)
    Auditor(writer).request(_event(args={"payload": big, "password": "pw"}))
    fields, via_memfd = journald.receive()
    assert via_memfd
    assert writer.counts[Outcome.SENT_MEMFD] == 1
    assert json.loads(fields["VMAGENT_ARGS"]) == {"payload": big, "password": "***"}
    assert fields["VMAGENT_COMMAND"] == b"hold.set"


def test_no_journal_socket_gives_json_line(tmp_path: Path) -> None:
    stream = io.StringIO()
    auditor = Auditor(JournalWriter(str(tmp_path / "absent.sock"), stream=stream))
    auditor.request(_event(result="forbidden", role="viewer"))
    auditor.request(_event(command="health", message="two\nlines"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["VMAGENT_RESULT"] == "forbidden" and first["VMAGENT_ROLE"] == "viewer"
    assert first["PRIORITY"] == 4 and first["SYSLOG_IDENTIFIER"] == "vm-agent"
    assert json.loads(first["VMAGENT_ARGS"])["db_password"] == "***"
    assert second["MESSAGE"] == "two\nlines"
    assert auditor.writer.counts[Outcome.FALLBACK] == 2 and auditor.failures == 0


def test_full_journal_neither_blocks_nor_raises(journald: FakeJournald, writer: JournalWriter,
                                                caplog: pytest.LogCaptureFixture) -> None:
    auditor = Auditor(writer)

    def flood() -> None:
        for i in range(500):   # nobody reads: the queue (net.unix.max_dgram_qlen) fills
            auditor.request(_event(request_id=f"r-{i}"))

    flooder = threading.Thread(target=flood, daemon=True)
    with caplog.at_level(logging.WARNING, logger="vm-agent"):
        flooder.start()
        flooder.join(timeout=5)
    assert not flooder.is_alive(), "audit() blocked on a full journal socket"
    assert writer.counts[Outcome.SENT] >= 1
    assert auditor.failures == 500 - writer.counts[Outcome.SENT] > 0
    lost = [r for r in caplog.records if "audit entry lost" in r.getMessage()]
    assert len(lost) == 1          # logged once in a while, not once per entry
    assert journald.receive()[0]["VMAGENT_REQUEST_ID"] == b"r-0"


def test_audit_survives_a_closed_writer(writer: JournalWriter) -> None:
    auditor = Auditor(writer)
    writer.close()
    auditor.request(_event())
    auditor.action("container.restart", name="web")
    assert auditor.failures == 2


def test_action_fields(journald: FakeJournald, writer: JournalWriter) -> None:
    Auditor(writer).action("container.restart", message="restarted web", priority=5,
                           name="web", streak=3, plan={"steps": ["restart"], "token": "t"},
                           **{"api-token": "abc", "dry run": True})
    fields, _ = journald.receive()
    assert fields["VMAGENT_ACTION"] == b"container.restart"
    assert fields["MESSAGE"] == b"restarted web" and fields["PRIORITY"] == b"5"
    assert fields["VMAGENT_NAME"] == b"web" and fields["VMAGENT_STREAK"] == b"3"
    assert json.loads(fields["VMAGENT_PLAN"]) == {"steps": ["restart"], "token": "***"}
    assert fields["VMAGENT_API_TOKEN"] == b"***"
    assert fields["VMAGENT_DRY_RUN"] == b"True"
    assert fields["SYSLOG_IDENTIFIER"] == b"vm-agent"


@pytest.mark.parametrize("name", ["_SYSTEMD_UNIT", "lower", "1ABC", "A-B", "", "A" * 65])
def test_invalid_field_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidFieldName):
        encode_entry({name: "x"})


def test_redact_leaves_other_values() -> None:
    value = {"name": "web", "items": ({"passwd": 1}, 2), "Credentials": {"a": 1}}
    assert redact(value) == {"name": "web", "items": [{"passwd": "***"}, 2],
                             "Credentials": "***"}


def test_log_handler_sends_records(journald: FakeJournald, writer: JournalWriter) -> None:
    logger = logging.getLogger("vm-agent.test-handler")
    handler = JournalHandler(writer)
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("sampler failed")
    finally:
        logger.removeHandler(handler)
    fields, _ = journald.receive()
    assert fields["SYSLOG_IDENTIFIER"] == b"vm-agent" and fields["PRIORITY"] == b"3"
    assert fields["LOGGER"] == b"vm-agent.test-handler"
    assert fields["MESSAGE"].startswith(b"sampler failed\nTraceback")
    assert b"RuntimeError: boom" in fields["MESSAGE"]
    assert fields["CODE_FUNC"] == b"test_log_handler_sends_records"


def test_log_handler_falls_back_to_plain_stderr_line(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = JournalHandler(JournalWriter(str(tmp_path / "absent.sock"), stream=stream))
    logger = logging.getLogger("vm-agent.test-fallback")
    logger.addHandler(handler)
    try:
        logger.warning("disk %s nearly full", "/")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().endswith(" WARNING vm-agent.test-fallback: disk / nearly full\n")
