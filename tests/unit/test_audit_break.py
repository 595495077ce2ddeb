"""Breaking the audit trail: values that split lines or entries, secrets under other names."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
from pathlib import Path

import pytest

from agent.audit import AuditEvent, Auditor, args_json
from agent.journal import JournalWriter
from tests.unit.test_audit import FakeJournald

#: line breaks to Unicode-aware readers that json.dumps(ensure_ascii=False) leaves as they are
UNICODE_BREAKS = ["\x85", "\u2028", "\u2029"]


def _event(args: dict[str, object], **kw: object) -> AuditEvent:
    values: dict[str, object] = {
        "command": "unknown", "peer_uid": 65533, "peer_gid": 65533, "peer_pid": 7,
        "role": "none", "result": "forbidden", "request_id": "r-1", "duration_ms": 0.5,
        "args": args}
    values.update(kw)
    return AuditEvent(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("brk", UNICODE_BREAKS, ids=["NEL", "LS", "PS"])
def test_fallback_line_is_one_line_to_any_line_reader(tmp_path: Path, brk: str) -> None:
    """A peer in no role asks for ``/v1/%E2%80%A8...``: its path is in VMAGENT_ARGS.
    Without a journal the entry is one JSON line on stderr, and a reader that splits
    on Unicode line breaks (Python's str.splitlines, the protocol tests' own reader)
    got two broken halves instead of the entry."""
    stream = io.StringIO()
    auditor = Auditor(JournalWriter(str(tmp_path / "absent.sock"), stream=stream))
    path = f"/v1/{brk}{{\"VMAGENT_RESULT\": \"ok\"}}"
    auditor.request(_event({"method": "GET", "path": path}))
    auditor.request(_event({}, message=f"a{brk}b"))
    auditor.action("alert", message=f"subject{brk}x", subject=f"s{brk}")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert json.loads(first["VMAGENT_ARGS"])["path"] == path
    assert second["MESSAGE"] == f"a{brk}b"
    assert third["MESSAGE"] == f"subject{brk}x" and third["VMAGENT_SUBJECT"] == f"s{brk}"


def test_fallback_keeps_other_non_ascii_text(tmp_path: Path) -> None:
    stream = io.StringIO()
    Auditor(JournalWriter(str(tmp_path / "absent.sock"), stream=stream)).request(
        _event({"reason": "Wartung \u00fcber Nacht \u2014 ok"}))
    assert "Wartung \u00fcber Nacht \u2014 ok" in stream.getvalue()


SECRET_KEYS = ["apiKey", "x-api-key", "API-KEY", "privateKey", "private_key", "accessKey",
               "aws_access_key_id", "Cookie", "passphrase", "clientSecret", "authToken",
               "Proxy-Authorization", "db.password"]
#: every parameter name PROTOCOL.md's routes take: none of them may be redacted
PROTOCOL_PARAMS = ["reason", "mode", "dry_run", "wait", "model", "force", "name", "tail",
                   "filter", "stack", "limit", "range", "kind", "id", "job", "method", "path",
                   "error"]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys_in_other_spellings_are_redacted(key: str) -> None:
    """The dashboard is a Node service: a stray ``{"apiKey": ...}`` in a body (refused as an
    unknown field, but recorded as sent) reached the journal in clear."""
    text = args_json({key: "s3cr3t-value", "nested": [{key: "s3cr3t-value"}]})
    assert "s3cr3t-value" not in text
    assert json.loads(text) == {key: "***", "nested": [{key: "***"}]}


def test_protocol_parameters_are_not_redacted() -> None:
    args = {key: f"v-{key}" for key in PROTOCOL_PARAMS}
    assert json.loads(args_json(args)) == args


def _entries_as_journald_splits_them(data: bytes) -> list[dict[str, bytes]]:
    """journald's reading of one datagram (journald-native.c): an empty line ends an entry
    and the next one starts; ``KEY=value`` up to the newline; ``KEY\\n`` + u64le length."""
    entries: list[dict[str, bytes]] = [{}]
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        line = data[pos:end]
        if not line:
            entries.append({})
            pos = end + 1
            continue
        if b"=" in line:
            key, _, value = line.partition(b"=")
            pos = end + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[end + 1:end + 9])
            value = data[end + 9:end + 9 + size]
            pos = end + 10 + size
        entries[-1][key.decode()] = value
    return [e for e in entries if e]


HOSTILE = ["a\n\nVMAGENT_RESULT=ok\n", "=", "x=y\nMESSAGE=forged", "nul\x00byte",
           "\u2028\u2029\x85", "\r\n\r\n", "z" * 70_000]


@pytest.mark.parametrize("value", HOSTILE, ids=["blank-line", "eq", "forged-field", "nul",
                                                "unicode-breaks", "crlf", "70k"])
def test_no_value_adds_a_field_or_an_entry(tmp_path: Path, value: str) -> None:
    """A value in a message, an action detail or the args: journald still reads one entry
    whose fields are the ones written (the 70k one goes by memfd)."""
    journald = FakeJournald(tmp_path / "j.sock")
    writer = JournalWriter(str(journald.path), stream=io.StringIO())
    try:
        auditor = Auditor(writer)
        auditor.request(_event({"reason": value}, message=value))
        auditor.action("job.refused", message=value, reason=value)
        for _ in range(2):
            raw, fds, _flags, _addr = socket.recv_fds(journald.sock, 1 << 20, 1)
            if fds:
                raw = os.pread(fds[0], os.fstat(fds[0]).st_size, 0)
                os.close(fds[0])
            [entry] = _entries_as_journald_splits_them(raw)
            assert entry["MESSAGE"] == value.encode()
            assert entry.get("VMAGENT_RESULT", b"forbidden") == b"forbidden"
            assert "VMAGENT_ARGS" in entry or entry["VMAGENT_REASON"] == value.encode()
    finally:
        writer.close()
        journald.sock.close()
