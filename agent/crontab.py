"""The host crontab's legacy ``# bytelyst-vm-maintenance`` block, parsed with next runs.

Before vm-agent, the VM's maintenance ran from cron.  ``GET /v1/jobs`` shows
what is still there (``legacy_crontab[]``) so the move to timers is visible.

**Block format.**  The block starts at a comment line whose text begins
with ``bytelyst-vm-maintenance`` and ends at the next such line that says
``end`` (or, when neither says begin/end, at the next marker line: a pair of
identical markers also delimits a block)::

    # bytelyst-vm-maintenance BEGIN (managed by setup-vm.sh)
    SHELL=/bin/bash
    30 3 * * * /usr/local/bin/vm-cleanup.sh >> /var/log/vm-cleanup.log 2>&1
    */10 * * * * /usr/local/bin/docker-watchdog.sh >> /var/log/docker-watchdog.log 2>&1
    # 0 7 * * * /usr/local/bin/vm-health-check.sh      (commented out: enabled=false)
    @reboot /usr/local/bin/vm-cleanup.sh --boot
    # bytelyst-vm-maintenance END

A block without an end marker runs to the end of the file.  Inside it:
environment lines (``NAME=value``) and plain comments are skipped; a
commented-out line that parses as an entry is listed with ``enabled:
false``; ``@reboot`` has ``next_run: "at boot"``; ``@daily`` and the other
``man 5 crontab`` nicknames are expanded; an expression that can never fire
has ``next_run: "never"``; a line that does not parse is listed with an
``error``.

**Files.**  :data:`DEFAULT_SOURCES`: root's crontab
``/var/spool/cron/crontabs/root`` (user format: 5 fields, command) and
``/etc/crontab`` (system format: 5 fields, user, command).  A file named
``crontab`` or lying in a ``cron.d`` folder is read in system format, any
other in user format.  Missing or unreadable files count as having no block.
Cron reads times in the host's zone (:func:`host_zone`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.errors import ConfigError
from agent.schedule import next_run_text, parse_cron

MARKER = "bytelyst-vm-maintenance"
DEFAULT_SOURCES = ("/var/spool/cron/crontabs/root", "/etc/crontab")
AT_BOOT = "at boot"
#: ``man 5 crontab`` nicknames.
NICKNAMES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
             "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
             "@hourly": "0 * * * *"}
_ENV_LINE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s*=")


@dataclass(frozen=True)
class LegacyEntry:
    """One line of the legacy block.

    ``schedule`` as written (``30 3 * * *``, ``@reboot``); ``user`` only in
    system-format files; ``next_run`` RFC 3339 UTC, ``"never"``, ``"at boot"``
    or None (disabled or unparsable); ``error`` why a line did not parse.
    """

    source: str
    line: int
    schedule: str
    command: str
    user: str | None = None
    enabled: bool = True
    next_run: str | None = None
    error: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


def host_zone(etc: str | os.PathLike[str] = "/etc") -> tzinfo:
    """The zone cron uses: ``<etc>/timezone``, else the ``<etc>/localtime`` link, else UTC."""
    root = Path(etc)
    try:
        return ZoneInfo((root / "timezone").read_text().strip())
    except (OSError, ValueError, ZoneInfoNotFoundError):
        pass
    try:
        return ZoneInfo(os.readlink(root / "localtime").split("zoneinfo/", 1)[1])
    except (OSError, IndexError, ValueError, ZoneInfoNotFoundError):
        return ZoneInfo("UTC")


def legacy_crontab(sources: Sequence[str] = DEFAULT_SOURCES, *, tz: tzinfo,
                   now: datetime) -> list[LegacyEntry]:
    """Entries of every legacy block in ``sources`` (file order, then line order).

    ``[]`` when no file has the block.  Never raises for a missing file.
    """
    entries: list[LegacyEntry] = []
    for source in sources:
        try:
            text = Path(source).read_text(errors="replace")
        except OSError:
            continue
        entries += parse_block(text, source=source, system=is_system_format(source),
                               tz=tz, now=now)
    return entries


def is_system_format(path: str) -> bool:
    """True for ``/etc/crontab`` and ``/etc/cron.d/*`` (lines carry a user field)."""
    p = Path(path)
    return p.name == "crontab" or p.parent.name == "cron.d"


def parse_block(text: str, *, source: str, system: bool, tz: tzinfo,
                now: datetime) -> list[LegacyEntry]:
    """The entries inside the marker block(s) of one crontab's ``text``."""
    return [entry for number, line in block_lines(text.splitlines())
            if (entry := parse_line(line, source=source, number=number, system=system,
                                    tz=tz, now=now)) is not None]


def block_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of the lines between markers (markers excluded)."""
    inside = False
    for number, line in enumerate(lines, start=1):
        marker = _marker_word(line)
        if marker is None:
            if inside:
                yield number, line
        elif marker == "end" or (inside and marker != "begin"):
            inside = False
        else:
            inside = True


def _marker_word(line: str) -> str | None:
    """None for a non-marker line; else ``begin``, ``end`` or ``""`` (bare marker)."""
    text = line.strip()
    if not text.startswith("#") or not text.lstrip("# ").startswith(MARKER):
        return None
    rest = text.lstrip("# ")[len(MARKER):].strip(" :-=#<>").lower()
    word = rest.split()[0] if rest.split() else ""
    return {"begin": "begin", "start": "begin", "end": "end", "stop": "end"}.get(word, "")


def parse_line(line: str, *, source: str, number: int, system: bool, tz: tzinfo,
               now: datetime) -> LegacyEntry | None:
    """One block line as an entry; None for blank, environment and plain comment lines."""
    text = line.strip()
    enabled = not text.startswith("#")
    body = text.lstrip("#").strip()
    if not body or _ENV_LINE.match(body):
        return None
    head, fields = _split(body)
    rest = fields[1 if system else 0:]
    if head is None or not rest:
        return None if not enabled else LegacyEntry(
            source, number, body, "", error="not a cron line: expected 5 time fields "
            f"{'and a user ' if system else ''}before the command")
    user = fields[0] if system and fields else None
    entry = LegacyEntry(source, number, head, " ".join(rest), user=user, enabled=enabled)
    return _with_next_run(entry, tz, now) if enabled else entry


def _split(body: str) -> tuple[str | None, list[str]]:
    """``(schedule, remaining words)``; schedule None when the line does not start like one."""
    words = body.split()
    if words and words[0].startswith("@"):
        return (words[0], words[1:]) if words[0] in (*NICKNAMES, "@reboot") else (None, [])
    if len(words) < 6:
        return None, []
    try:
        parse_cron(" ".join(words[:5]))
    except ConfigError:
        return None, []
    return " ".join(words[:5]), words[5:]


def _with_next_run(entry: LegacyEntry, tz: tzinfo, now: datetime) -> LegacyEntry:
    if entry.schedule == "@reboot":
        next_run = AT_BOOT
    else:
        next_run = next_run_text(NICKNAMES.get(entry.schedule, entry.schedule), tz, now)
    return LegacyEntry(**{**asdict(entry), "next_run": next_run})
