"""A journald writer speaking the native protocol, with a stderr fallback.

Format (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/, ``man 7
systemd.journal-fields``): one ``AF_UNIX``/``SOCK_DGRAM`` datagram per entry
to ``/run/systemd/journal/socket``; each field is ``KEY=value\\n``, or, when
the value holds a newline, the binary-safe ``KEY\\n<u64 little-endian
length><bytes>\\n``.  A datagram the kernel refuses as too large
(``EMSGSIZE``/``ENOBUFS``) is written to a sealed memfd whose descriptor is
passed alone with ``SCM_RIGHTS``, as ``sd_journal_sendv()`` does.

Field names are ``[A-Z][A-Z0-9_]*``, at most 64 characters; a leading ``_``
is reserved for fields journald itself adds (``journal_field_valid()`` in
systemd's ``journal-file.c`` also refuses a leading digit).

The socket is non-blocking: a full journal drops the entry (counted by the
caller) rather than stalling the event loop.  When there is no journal socket
(``ENOENT``/``ECONNREFUSED``) the entry goes to ``stream`` as one JSON line:
non-ASCII text is kept, but NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR
(U+0085, U+2028, U+2029), which JSON leaves as they are and Unicode-aware
line readers split on, are written as ``\\uXXXX`` escapes.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import functools
import json
import logging
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Final, Protocol, TextIO

from agent.errors import Internal

#: journald's native-protocol socket (``man 8 systemd-journald.service``).
JOURNAL_SOCKET: Final = "/run/systemd/journal/socket"

_FIELD_NAME: Final = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_TOO_LARGE: Final = frozenset({errno.EMSGSIZE, errno.ENOBUFS})
_NO_JOURNAL: Final = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR})
#: After finding no journal socket, entries go to the fallback for this long before
#: the socket is tried again (journald started later is picked up within it).
ABSENT_RECHECK_S: Final = 1.0
#: line breaks to Python's str.splitlines() (and ECMAScript before 2019) that JSON does not
#: escape; in JSON text they only occur inside strings, where ``\\uXXXX`` means the same
_UNICODE_BREAKS: Final = re.compile("[\x85\u2028\u2029]")
_SEALS: Final = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL

FieldValue = str | bytes | int | float


class PreparedEntry(Protocol):
    """An entry that encodes itself (the audit trail's request entries do, cheaply)."""

    def native(self) -> bytes:
        """The datagram payload, as :func:`encode_entry` of the entry's fields would give."""

    def json_line(self) -> str:
        """The fallback JSON line (no newline), as :class:`JournalWriter` would write the
        fields."""


class InvalidFieldName(Internal):
    """A journal field name outside ``[A-Z][A-Z0-9_]{0,63}`` (a bug in the caller)."""


class Outcome(enum.Enum):
    """What :meth:`JournalWriter.send` did with one entry."""

    SENT = "sent"            # one datagram
    SENT_MEMFD = "memfd"     # too large for a datagram; passed as a sealed memfd
    FALLBACK = "fallback"    # no journal socket; written to the fallback stream
    DROPPED = "dropped"      # journal busy or broken (EAGAIN, EPERM, ...); lost


@functools.lru_cache(maxsize=1024)  # the same dozen names on every request
def check_field_name(name: str) -> str:
    """Return ``name`` if journald accepts it as a client field name.

    Raises :class:`InvalidFieldName` otherwise (``man 7 systemd.journal-fields``).
    """
    if not _FIELD_NAME.fullmatch(name):
        raise InvalidFieldName(f"invalid journal field name {name!r}", {"field": name})
    return name


def escape_line_breaks(json_text: str) -> str:
    """``json_text`` with U+0085, U+2028 and U+2029 as ``\\uXXXX`` escapes: the same JSON
    value, one line to any line reader."""
    if _UNICODE_BREAKS.search(json_text) is None:
        return json_text
    return _UNICODE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", json_text)


def _as_bytes(value: FieldValue) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "replace")


def encode_field(name: str, value: FieldValue) -> bytes:
    """One field in the native format: ``KEY=value\\n`` or the binary-safe form."""
    key = check_field_name(name).encode("ascii")
    data = _as_bytes(value)
    if b"\n" not in data:
        return key + b"=" + data + b"\n"
    return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"


def encode_entry(fields: Mapping[str, FieldValue]) -> bytes:
    """A whole entry (one datagram's payload); raises :class:`InvalidFieldName`."""
    return b"".join(encode_field(name, value) for name, value in fields.items())


def _sealed_memfd(payload: bytes) -> int:
    """A memfd holding ``payload``, sealed against any change (``man 2 memfd_create``)."""
    fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


class JournalWriter:
    """Sends entries to journald; thread-safe; :meth:`send` never raises ``OSError``.

    ``socket_path`` is injectable for tests; ``stream`` receives the JSON-line
    fallback when no journal socket exists.  ``counts`` maps each
    :class:`Outcome` to how many entries ended that way.
    """

    def __init__(self, socket_path: str = JOURNAL_SOCKET, stream: TextIO | None = None) -> None:
        self.socket_path = socket_path
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self.last_error: OSError | None = None
        self._lock = threading.Lock()
        self._absent_until = 0.0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    def send(self, fields: Mapping[str, FieldValue], *,
             fallback_line: str | None = None) -> Outcome:
        """Write one entry; returns what happened.

        ``fallback_line`` replaces the JSON line on the fallback stream (the
        log handler passes its formatted record).  Raises only
        :class:`InvalidFieldName`, before anything is sent.
        """
        if self.journal_absent():  # no datagram to encode: check the names alone
            for name in fields:
                check_field_name(name)
            outcome = Outcome.FALLBACK
        else:
            outcome = self._deliver(encode_entry(fields))
        if outcome is Outcome.FALLBACK:
            outcome = self._write_fallback(fields, fallback_line)
        self._count(outcome, 1)
        return outcome

    def send_prepared(self, entries: Sequence[PreparedEntry]) -> list[Outcome]:
        """Write entries that encode themselves; one :class:`Outcome` per entry, in order.

        Each entry is one datagram (journald takes one entry per datagram);
        the entries that fall back go to ``stream`` in one write.  Never
        raises ``OSError``.
        """
        if self.journal_absent():  # the common case without journald: one write for all
            outcome = self._write_lines([entry.json_line() for entry in entries], as_json=True)
            self._count(outcome, len(entries))
            return [outcome] * len(entries)
        outcomes = [self._deliver(entry.native()) for entry in entries]
        fallback = [entry.json_line() for entry, outcome in zip(entries, outcomes, strict=True)
                    if outcome is Outcome.FALLBACK]
        if fallback:
            written = self._write_lines(fallback, as_json=True)
            outcomes = [written if o is Outcome.FALLBACK else o for o in outcomes]
        for outcome in outcomes:
            self._count(outcome, 1)
        return outcomes

    def _count(self, outcome: Outcome, n: int) -> None:
        with self._lock:
            self.counts[outcome] += n

    def journal_absent(self) -> bool:
        """True while a recent send found no journal socket (re-tried every
        :data:`ABSENT_RECHECK_S` seconds)."""
        return time.monotonic() < self._absent_until

    def _deliver(self, payload: bytes) -> Outcome:
        try:
            self._sock.sendto(payload, self.socket_path)
            return Outcome.SENT
        except OSError as exc:
            if exc.errno in _TOO_LARGE:
                return self._deliver_memfd(payload)
            return self._failed(exc)

    def _deliver_memfd(self, payload: bytes) -> Outcome:
        try:
            fd = _sealed_memfd(payload)
        except OSError as exc:
            return self._failed(exc)
        try:
            # socket.send_fds() drops its address argument before Python 3.12: use sendmsg.
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            self._sock.sendmsg([], rights, 0, self.socket_path)
            return Outcome.SENT_MEMFD
        except OSError as exc:
            return self._failed(exc)
        finally:
            os.close(fd)

    def _failed(self, exc: OSError) -> Outcome:
        self.last_error = exc
        if exc.errno in _NO_JOURNAL:
            self._absent_until = time.monotonic() + ABSENT_RECHECK_S
            return Outcome.FALLBACK
        return Outcome.DROPPED

    def _write_fallback(self, fields: Mapping[str, FieldValue], line: str | None) -> Outcome:
        if line is not None:
            return self._write_lines([line.rstrip("\n")])
        line = json.dumps({k: _json_value(v) for k, v in fields.items()}, ensure_ascii=False)
        return self._write_lines([line], as_json=True)

    def _write_lines(self, lines: list[str], *, as_json: bool = False) -> Outcome:
        text = "\n".join(lines) + "\n"
        if as_json:
            text = escape_line_breaks(text)
        try:
            with self._lock:
                self.stream.write(text)
                self.stream.flush()
        except (OSError, ValueError) as exc:  # closed or broken stream
            self.last_error = exc if isinstance(exc, OSError) else None
            return Outcome.DROPPED
        return Outcome.FALLBACK

    def close(self) -> None:
        """Close the socket; later sends are dropped (``EBADF``)."""
        self._sock.close()


def _json_value(value: FieldValue) -> str | int | float:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def syslog_priority(levelno: int) -> int:
    """Syslog priority (``man 3 syslog``) of a logging level: ``CRITICAL`` 2, ``ERROR`` 3,
    ``WARNING`` 4, ``INFO`` 6, ``DEBUG`` and below 7."""
    for threshold, priority in ((50, 2), (40, 3), (30, 4), (20, 6)):
        if levelno >= threshold:
            return priority
    return 7


class JournalHandler(logging.Handler):
    """Sends log records to the journal with ``SYSLOG_IDENTIFIER`` (default ``vm-agent``).

    Fields: ``MESSAGE`` (the formatted record, traceback included), ``PRIORITY``,
    ``LOGGER``, ``CODE_FILE``, ``CODE_LINE``, ``CODE_FUNC``, ``THREAD_NAME``.
    Without a journal the record goes to the writer's stream as a plain line
    formatted by ``fallback_formatter``.  A record the journal drops is counted
    by the writer, never logged again (no recursion).
    """

    def __init__(self, writer: JournalWriter, *, identifier: str = "vm-agent",
                 level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.writer = writer
        self.identifier = identifier
        self.fallback_formatter = logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.send(self.record_fields(record),
                             fallback_line=self.fallback_formatter.format(record))
        except Exception:
            self.handleError(record)

    def record_fields(self, record: logging.LogRecord) -> dict[str, FieldValue]:
        """The journal fields of one log record."""
        return {
            "MESSAGE": self.format(record),
            "PRIORITY": syslog_priority(record.levelno),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": record.lineno,
            "CODE_FUNC": record.funcName,
            "THREAD_NAME": record.threadName or "",
        }
