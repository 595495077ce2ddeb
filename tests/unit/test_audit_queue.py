"""The request entries' own encoders and the queue that writes them right after the reply."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from agent.audit import AuditEvent, Auditor, event_fields
from agent.journal import JournalWriter, Outcome, encode_entry
from tests.unit.test_audit import FakeJournald

EVENTS = [
    AuditEvent("health", 0, 0, 4242, "operator", "ok", "0b342d7e00000001", 0.006),
    AuditEvent("hold.set", 1000, 1001, None, "viewer", "forbidden", "dash-42", 12.5,
               {"reason": 'a\nb \u2028 "q" \\', "token": "x", "n": [1, {"password": 2}]}),
    AuditEvent("unknown", 65533, 65533, 7, "none", "not_found", "r\u00e9\x01\"", 1.0,
               {"method": "GET", "path": "/v1/\u00fcber"}),
    AuditEvent("x", 1, 2, 3, "none", "ok", "r", 1.0, message="two\nlines \u00e9 \ud800"),
    AuditEvent("x", 1, 2, 3, "operator", "internal", "r", 1.0, message="tab\there", priority=2),
    AuditEvent("connection", -1, -1, None, "none", "rate_limited", "abc", 0.0),
]


def _reference_line(event: AuditEvent) -> str:
    """What JournalWriter writes for the fields of ``event`` (its generic path)."""
    fields = event_fields(event)
    return json.dumps({k: v.decode() if isinstance(v, bytes) else v for k, v in fields.items()},
                      ensure_ascii=False)


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{e.command}-{e.result}")
def test_native_is_the_generic_encoding(event: AuditEvent) -> None:
    assert event.native() == encode_entry(event_fields(event))


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{e.command}-{e.result}")
def test_json_line_is_the_generic_line(event: AuditEvent) -> None:
    line = event.json_line()
    assert line == _reference_line(event)
    assert "\n" not in line
    assert json.loads(line)["VMAGENT_REQUEST_ID"] == event.request_id


class CountingStream(io.StringIO):
    """A fallback stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def entries(self) -> list[dict[str, Any]]:
        # "\n" only: a value may hold U+2028, which str.splitlines() would also split on
        return [json.loads(line) for line in self.getvalue().split("\n") if line]


def _auditor(tmp_path: Path) -> tuple[Auditor, CountingStream]:
    stream = CountingStream()
    return Auditor(JournalWriter(str(tmp_path / "no-journal.sock"), stream=stream)), stream


def test_request_outside_a_loop_is_written_at_once(tmp_path: Path) -> None:
    auditor, stream = _auditor(tmp_path)
    auditor.request(EVENTS[0])
    assert [e["VMAGENT_REQUEST_ID"] for e in stream.entries()] == ["0b342d7e00000001"]


async def test_requests_of_one_step_are_written_together_at_the_next_pass(
        tmp_path: Path) -> None:
    auditor, stream = _auditor(tmp_path)
    auditor.writer.send({"MESSAGE": "probe"})  # finds no journal: the fallback from now on
    stream.writes = 0
    for event in EVENTS:
        auditor.request(event)
    assert stream.writes == 0  # nothing before this step ends
    await asyncio.sleep(0)
    assert stream.writes == 1
    assert [e["VMAGENT_REQUEST_ID"] for e in stream.entries()[1:]] == [
        e.request_id for e in EVENTS]
    assert auditor.writer.counts[Outcome.FALLBACK] == 1 + len(EVENTS)


async def test_flush_writes_what_is_queued_once(tmp_path: Path) -> None:
    auditor, stream = _auditor(tmp_path)
    auditor.request(EVENTS[0])
    auditor.request(EVENTS[1])
    auditor.flush()  # a clean stop, before the loop got to the queued callback
    assert len(stream.entries()) == 2
    await asyncio.sleep(0)
    assert len(stream.entries()) == 2  # the queued callback finds nothing left


async def test_each_entry_is_one_datagram_to_journald(tmp_path: Path) -> None:
    journald = FakeJournald(tmp_path / "journal.sock")
    writer = JournalWriter(str(journald.path), stream=io.StringIO())
    try:
        auditor = Auditor(writer)
        for event in EVENTS:
            auditor.request(event)
        await asyncio.sleep(0)
        for event in EVENTS:
            fields, via_memfd = journald.receive()
            assert not via_memfd
            assert fields == {k: v if isinstance(v, bytes) else str(v).encode("utf-8", "replace")
                              for k, v in event_fields(event).items()}
        assert not journald.pending()
        assert writer.counts[Outcome.SENT] == len(EVENTS)
    finally:
        writer.close()
        journald.sock.close()


async def test_lost_entries_are_counted(tmp_path: Path) -> None:
    journald = FakeJournald(tmp_path / "journal.sock")
    writer = JournalWriter(str(journald.path), stream=io.StringIO())
    writer.close()  # every send now fails with EBADF: dropped, not raised
    journald.sock.close()
    auditor = Auditor(writer)
    for event in EVENTS[:3]:
        auditor.request(event)
    await asyncio.sleep(0)
    assert auditor.failures == 3
    assert writer.counts[Outcome.DROPPED] == 3
