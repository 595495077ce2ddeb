"""The audit trail: one journal entry per request and per action.

Every entry carries ``SYSLOG_IDENTIFIER=vm-agent`` and fixed ``VMAGENT_*``
fields, so an operator can ask ``journalctl -t vm-agent
VMAGENT_COMMAND=containers.restart`` or ``VMAGENT_RESULT=forbidden``.
Arguments are stored as JSON in ``VMAGENT_ARGS`` with secrets redacted.

:meth:`Auditor.request` (a request entry, written at the next loop pass) and
:meth:`Auditor.action` never raise and never block: the journal socket is
non-blocking, a lost entry is counted and a warning is logged at most once a
minute.  Without a journal socket each entry is one JSON line on stderr
(see :mod:`agent.journal`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from json.encoder import encode_basestring
from types import MappingProxyType
from typing import Any, Final, Literal, NamedTuple

from agent.journal import FieldValue, JournalWriter, Outcome, encode_entry

log = logging.getLogger("vm-agent")

IDENTIFIER: Final = "vm-agent"
Role = Literal["viewer", "operator", "none"]

#: syslog priorities (``man 3 syslog``).
PRIORITY_ERR: Final = 3
PRIORITY_WARNING: Final = 4
PRIORITY_INFO: Final = 6

#: A key containing any of these has its value replaced by ``"***"``; compared with the key
#: lower-cased and stripped of everything but letters and digits, so ``apiKey``,
#: ``X-Api-Key`` and ``api_key`` all match ``apikey``.
SECRET_WORDS: Final = ("token", "password", "passwd", "passphrase", "secret", "authorization",
                       "apikey", "accesskey", "privatekey", "credential", "cookie")
_NOT_ALNUM: Final = re.compile(r"[^a-z0-9]")
REDACTED: Final = "***"
_WARN_EVERY_S: Final = 60.0
_UNSAFE_NAME: Final = re.compile(r"[^A-Z0-9_]")
_NO_ARGS: Final[Mapping[str, Any]] = MappingProxyType({})
_FIELDS: Final = 11  # fields of a request entry, VMAGENT_PEER_PID aside
#: ``json.dumps(s, ensure_ascii=False)`` of a str, without the call's keyword handling
_json_string: Final = encode_basestring
#: the few strings that repeat on every entry (identifier, command, role, result), encoded once
_json_name: Final = functools.lru_cache(maxsize=256)(encode_basestring)


def priority_for(result: str) -> int:
    """Syslog priority of a request result: ``ok`` 6 (info), ``internal`` 3 (err),
    any other error code 4 (warning: a refusal)."""
    if result == "ok":
        return PRIORITY_INFO
    return PRIORITY_ERR if result == "internal" else PRIORITY_WARNING


def _is_secret(key: str) -> bool:
    folded = _NOT_ALNUM.sub("", key.lower())
    return any(word in folded for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """A copy of ``value`` where every mapping key naming a secret maps to ``"***"``.

    Recurses through mappings, lists and tuples; other values are returned as is.
    """
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_secret(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def args_json(args: Mapping[str, Any]) -> str:
    """``args`` redacted, as compact JSON with sorted keys; odd values via ``str()``."""
    if not args:
        return "{}"
    return json.dumps(redact(args), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)


class AuditEvent(NamedTuple):
    """One request as the audit trail records it (immutable; a tuple: cheap to build).

    ``result`` is ``"ok"`` or the PROTOCOL.md error code; ``duration_ms`` is
    milliseconds from the first byte read to the reply; ``priority`` defaults
    to :func:`priority_for` of ``result``; ``message`` defaults to a one-line
    summary.  ``peer_pid`` is ``None`` when the kernel gave no pid (the field
    is then left out).
    """

    command: str
    peer_uid: int
    peer_gid: int
    peer_pid: int | None
    role: Role
    result: str
    request_id: str
    duration_ms: float
    args: Mapping[str, Any] = _NO_ARGS
    message: str = ""
    priority: int | None = None

    def summary(self) -> str:
        """The human ``MESSAGE``: the given one, else ``"<command> -> <result> (...)"``."""
        if self.message:
            return self.message
        return (f"{self.command} -> {self.result} (uid {self.peer_uid}, role {self.role}, "
                f"{self.duration_ms:.1f} ms)")

    def native(self) -> bytes:
        """The journal datagram, byte for byte ``encode_entry(event_fields(self))``,
        built as one string (values holding a newline take ``encode_entry``)."""
        pid = "" if self.peer_pid is None else f"VMAGENT_PEER_PID={self.peer_pid}\n"
        text = (f"MESSAGE={self.summary()}\nPRIORITY={self._priority()}\n"
                f"SYSLOG_IDENTIFIER={IDENTIFIER}\nVMAGENT_COMMAND={self.command}\n"
                f"VMAGENT_PEER_UID={self.peer_uid}\nVMAGENT_PEER_GID={self.peer_gid}\n"
                f"VMAGENT_ROLE={self.role}\nVMAGENT_RESULT={self.result}\n"
                f"VMAGENT_REQUEST_ID={self.request_id}\n"
                f"VMAGENT_DURATION_MS={self.duration_ms:.3f}\n"
                f"VMAGENT_ARGS={args_json(self.args)}\n{pid}")
        if text.count("\n") != _FIELDS + (self.peer_pid is not None):
            return encode_entry(event_fields(self))
        return text.encode("utf-8", "replace")

    def json_line(self) -> str:
        """The fallback line, exactly ``json.dumps(event_fields(self), ensure_ascii=False)``."""
        js, name = _json_string, _json_name
        pid = "" if self.peer_pid is None else f', "VMAGENT_PEER_PID": {self.peer_pid}'
        return (f'{{"MESSAGE": {js(self.summary())}, "PRIORITY": {self._priority()}, '
                f'"SYSLOG_IDENTIFIER": {name(IDENTIFIER)}, '
                f'"VMAGENT_COMMAND": {name(self.command)}, '
                f'"VMAGENT_PEER_UID": {self.peer_uid}, "VMAGENT_PEER_GID": {self.peer_gid}, '
                f'"VMAGENT_ROLE": {name(self.role)}, "VMAGENT_RESULT": {name(self.result)}, '
                f'"VMAGENT_REQUEST_ID": {js(self.request_id)}, '
                f'"VMAGENT_DURATION_MS": "{self.duration_ms:.3f}", '
                f'"VMAGENT_ARGS": {js(args_json(self.args))}{pid}}}')

    def _priority(self) -> int:
        return self.priority if self.priority is not None else priority_for(self.result)


def event_fields(event: AuditEvent) -> dict[str, FieldValue]:
    """The journal fields of one request entry (``VMAGENT_*`` plus the standard ones)."""
    fields: dict[str, FieldValue] = {
        "MESSAGE": event.summary(),
        "PRIORITY": event.priority if event.priority is not None else priority_for(event.result),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "VMAGENT_COMMAND": event.command,
        "VMAGENT_PEER_UID": event.peer_uid,
        "VMAGENT_PEER_GID": event.peer_gid,
        "VMAGENT_ROLE": event.role,
        "VMAGENT_RESULT": event.result,
        "VMAGENT_REQUEST_ID": event.request_id,
        "VMAGENT_DURATION_MS": f"{event.duration_ms:.3f}",
        "VMAGENT_ARGS": args_json(event.args),
    }
    if event.peer_pid is not None:
        fields["VMAGENT_PEER_PID"] = event.peer_pid
    return fields


def _field_value(key: str, value: Any) -> FieldValue:
    if _is_secret(key):
        return REDACTED
    if isinstance(value, str | bytes | int | float):
        return value
    return json.dumps(redact(value), sort_keys=True, ensure_ascii=False, default=str)


def action_fields(event_name: str, message: str, priority: int,
                  fields: Mapping[str, Any]) -> dict[str, FieldValue]:
    """Journal fields of an action: ``VMAGENT_ACTION`` plus one ``VMAGENT_<KEY>`` per field.

    Keys are upper-cased with anything outside ``A-Z0-9_`` turned into ``_``;
    dict and list values become redacted JSON; secret-named keys become ``"***"``.
    """
    out: dict[str, FieldValue] = {
        "MESSAGE": message or f"action {event_name}",
        "PRIORITY": priority,
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "VMAGENT_ACTION": event_name,
    }
    for key, value in fields.items():
        out["VMAGENT_" + _UNSAFE_NAME.sub("_", key.upper())[:56]] = _field_value(key, value)
    return out


class Auditor:
    """Writes audit entries through a :class:`~agent.journal.JournalWriter`.

    Neither :meth:`request` (with :meth:`flush`) nor :meth:`action` raises; failures are counted in
    ``failures`` and logged (warning, at most once per minute).
    """

    def __init__(self, writer: JournalWriter | None = None) -> None:
        self.writer = writer if writer is not None else JournalWriter()
        self.failures = 0
        self._last_warning = float("-inf")
        self._lock = threading.Lock()
        self._pending: list[AuditEvent] = []

    def request(self, event: AuditEvent) -> None:
        """Record one request right after the current event-loop step.

        The server calls this before it returns the reply; aiohttp writes the
        reply in the same step, and the entry is written by a callback queued
        here, at the loop's next pass (entries of one pass go together: one
        datagram each, or one write to the fallback stream).  An entry waits
        no longer than the step that answered it, so only the death of the
        process inside that step loses it; :meth:`flush` on a clean stop
        writes what is queued.  Called outside a running loop, it writes at once.
        """
        self._pending.append(event)
        if len(self._pending) > 1:  # a flush is already queued
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:
            self.flush()

    def flush(self) -> None:
        """Write every queued request entry now (see :meth:`request`)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            outcomes = self.writer.send_prepared(pending)
        except Exception as exc:  # an audit bug must not fail the loop
            self._note_failure(repr(exc), lost=len(pending))
            return
        if dropped := outcomes.count(Outcome.DROPPED):
            self._note_failure(repr(self.writer.last_error), lost=dropped)

    def action(self, event_name: str, /, *, message: str = "", priority: int = PRIORITY_INFO,
               **fields: Any) -> None:
        """Record a job or watchdog action, e.g. ``action("container.restart", name="web")``."""
        try:
            self._emit(action_fields(event_name, message, priority, fields))
        except Exception as exc:
            self._note_failure(repr(exc))

    def _emit(self, fields: dict[str, FieldValue]) -> None:
        outcome = self.writer.send(fields)
        if outcome is Outcome.DROPPED:
            self._note_failure(repr(self.writer.last_error))

    def _note_failure(self, why: str, *, lost: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            self.failures += lost
            if now - self._last_warning < _WARN_EVERY_S:
                return
            self._last_warning = now
            count = self.failures
        log.warning("audit entry lost (%d lost so far): %s", count, why)
