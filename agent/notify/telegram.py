"""Telegram Bot API client: ``sendMessage`` with HTML parse mode.

Reference: https://core.telegram.org/bots/api#sendmessage and
#formatting-options.  ``POST {api_base}/bot<token>/sendMessage`` with JSON
``{chat_id, text, parse_mode}``; the answer is ``{"ok": true, "result":
Message}`` or ``{"ok": false, "error_code", "description", "parameters":
{"retry_after": s}}`` (429 Too Many Requests).  ``text`` is 1-4096
characters after entity parsing, counted in UTF-16 code units (an emoji
outside the BMP counts 2).  In HTML mode ``&``, ``<`` and ``>`` must be
written ``&amp;``, ``&lt;``, ``&gt;``.

Texts are plain; this module escapes them and splits them on lines (a line
longer than a part on code-point boundaries), *before* escaping, so a part
never ends inside an entity or a tag.  Every part starts with the host name
in bold.  The bot token never appears in a log line, an exception or a
stored error: it lives in the URL only, and errors are rebuilt without it.
"""

from __future__ import annotations

import html
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from agent.config import TelegramConfig
from agent.errors import UpstreamUnavailable

log = logging.getLogger(__name__)

MAX_UNITS = 4096  # sendMessage text limit, UTF-16 code units
CREDENTIAL = "telegram-token"
TOKEN_PATTERN = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{10,200}")
PARSE_MODE = "HTML"


PERMANENT_CODES = (400, 403, 404)  # the same message would be refused again


class TelegramError(UpstreamUnavailable):
    """A send failed; ``retry_after_s`` is Telegram's 429 ``retry_after`` when given.

    ``permanent`` is True when Telegram refused this message for good (400
    other than "can't parse entities", e.g. "message text is empty"; 403 bot
    blocked or not a member; 404): resending it cannot succeed.  Timeouts,
    connection errors, 429 and 5xx are transient.  ``message`` never
    contains the bot token.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None,
                 permanent: bool = False) -> None:
        super().__init__("telegram", message, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s
        self.permanent = permanent


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, as Telegram counts message length."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    """``text`` escaped for parse mode HTML (``&``, ``<``, ``>``; quotes need not be)."""
    return html.escape(text, quote=False)


def header(host: str) -> str:
    """The first line of every part: the host name in bold (HTML)."""
    return f"<b>{escape(host)}</b>\n"


def split_text(text: str, budget: int) -> list[str]:
    """Plain ``text`` cut into parts whose *escaped* form is at most ``budget`` UTF-16 units.

    Cuts at line ends where possible; a longer line is cut between code
    points.  Joining the parts with "\\n" where a line was cut gives back
    the text (whitespace at cuts kept).  Raises ValueError when budget < 8.
    """
    if budget < 8:
        raise ValueError(f"budget {budget} too small")
    parts: list[str] = []
    current = ""
    for line in _long_lines_cut(text.split("\n"), budget):
        candidate = line if not current else f"{current}\n{line}"
        if utf16_len(escape(candidate)) <= budget:
            current = candidate
            continue
        parts.append(current)
        current = line
    parts.append(current)
    return [p for p in parts if p] or [""]


def _long_lines_cut(lines: list[str], budget: int) -> list[str]:
    out: list[str] = []
    for line in lines:
        out.extend(_cut_line(line, budget) if utf16_len(escape(line)) > budget else [line])
    return out


def _cut_line(line: str, budget: int) -> list[str]:
    pieces: list[str] = []
    current, units = "", 0
    for char in line:
        size = utf16_len(escape(char))
        if units + size > budget:
            pieces.append(current)
            current, units = "", 0
        current, units = current + char, units + size
    pieces.append(current)
    return pieces


def render_parts(text: str, host: str, limit: int = MAX_UNITS) -> list[str]:
    """The HTML messages for plain ``text``: each ``header(host)`` + escaped part, each at
    most ``limit`` UTF-16 units (before entity parsing, so also after)."""
    head = header(host)
    budget = limit - utf16_len(head)
    return [head + escape(part) for part in split_text(text, budget)]


def load_token(token_file: str, *, credentials_dir: str | None = None) -> str | None:
    """The bot token: ``$CREDENTIALS_DIRECTORY/telegram-token`` first, else ``token_file``.

    ``credentials_dir`` defaults to ``$CREDENTIALS_DIRECTORY`` (systemd
    ``LoadCredential=``).  None when neither is readable or the content does
    not look like a token (``<digits>:<secret>``); the token is never logged.
    """
    creds = credentials_dir if credentials_dir is not None else os.environ.get(
        "CREDENTIALS_DIRECTORY", "")
    for path in ([Path(creds) / CREDENTIAL] if creds else []) + (
            [Path(token_file)] if token_file else []):
        token = _read_token(path)
        if token is not None:
            return token
    if token_file and not os.path.lexists(token_file):
        if TOKEN_PATTERN.fullmatch(token_file.strip()):  # the token itself: never log it
            log.warning("telegram.token_file holds what looks like the bot token itself: "
                        "put the token in a file (mode 0600) and name that file")
        else:
            log.warning("telegram.token_file %s does not exist", token_file)
    return None


def _read_token(path: Path) -> str | None:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        if path.exists():
            log.warning("telegram token %s unreadable: %s", path, exc.strerror)
        return None
    if TOKEN_PATTERN.fullmatch(token):
        _warn_if_shared(path)
        return token
    log.warning("telegram token in %s is malformed (expected <digits>:<secret>); ignored", path)
    return None


def _warn_if_shared(path: Path) -> None:
    """Warn (never refuse: delivery goes on) when group or others may read the token file."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        log.warning("telegram token file %s has mode %04o: other users can read the bot "
                    "token; chmod 600 it", path, mode)


@dataclass(frozen=True)
class SentPart:
    """Telegram's answer to one accepted part: ``message_id`` from ``result``."""

    message_id: int | None


class TelegramClient:
    """Sends HTML messages to one chat; :meth:`close` when done.

    ``session`` (optional) is an ``aiohttp.ClientSession`` to reuse; one is
    made (and owned) otherwise.  Timeouts: ``cfg.timeout_s`` per request.
    """

    def __init__(self, cfg: TelegramConfig, token: str, *, host: str,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.cfg = cfg
        self.host = host
        self._token = token
        self._session = session
        self._owned = session is None

    def __repr__(self) -> str:
        return f"TelegramClient(api_base={self.cfg.api_base!r}, chat_id={self.cfg.chat_id!r})"

    def parts(self, text: str) -> list[str]:
        """The HTML parts :meth:`send_part` sends for plain ``text`` (see render_parts)."""
        return render_parts(text, self.host)

    async def send_part(self, part: str) -> SentPart:
        """Send one rendered part; on 400 "can't parse entities" resend it as plain text.

        Raises TelegramError (with ``retry_after_s`` on 429) on any other failure.
        """
        try:
            return await self._send({"text": part, "parse_mode": PARSE_MODE})
        except TelegramError as exc:
            if "parse entities" not in str(exc):
                raise
        log.warning("telegram rejected the HTML of a message; sending it as plain text")
        return await self._send({"text": html.unescape(re.sub(r"</?b>", "", part))})

    async def _send(self, payload: dict[str, Any]) -> SentPart:
        body = {"chat_id": self.cfg.chat_id, "link_preview_options": {"is_disabled": True},
                **payload}
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        try:
            async with self._http().post(self._url(), json=body, timeout=timeout) as resp:
                answer = await _json(resp)
        except TimeoutError:
            raise TelegramError(f"no answer from Telegram within {self.cfg.timeout_s:g} s"
                                ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TelegramError(self._redact(f"{type(exc).__name__}: {exc}")) from None
        return _result(answer, self._redact)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _url(self) -> str:
        return f"{self.cfg.api_base.rstrip('/')}/bot{self._token}/sendMessage"

    def _redact(self, text: str) -> str:
        secret = self._token.partition(":")[2]
        for form in (self._token, secret):  # the secret alone: also when ':' came back as %3A
            text = text.replace(form, "<token>") if form else text
        return text

    async def close(self) -> None:
        """Close the HTTP session this client made (not one it was given)."""
        if self._owned and self._session is not None:
            await self._session.close()
        self._session = None


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        answer = await resp.json(content_type=None)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise TelegramError(f"HTTP {resp.status}: the answer is not a JSON object")
    answer.setdefault("error_code", resp.status)
    return answer


def _result(answer: dict[str, Any], redact: Callable[[str], str]) -> SentPart:
    if answer.get("ok") is True:
        result = answer.get("result")
        msg_id = result.get("message_id") if isinstance(result, dict) else None
        return SentPart(msg_id if isinstance(msg_id, int) else None)
    params = answer.get("parameters")
    retry = params.get("retry_after") if isinstance(params, dict) else None
    description = redact(str(answer.get("description", "no description"))[:300])
    migrated = params.get("migrate_to_chat_id") if isinstance(params, dict) else None
    if isinstance(migrated, int):  # the group became a supergroup with a new id
        description += f"; set telegram.chat_id to {migrated}"
    code = answer.get("error_code")
    raise TelegramError(f"telegram error {code}: {description}",
                        retry_after_s=float(retry) if isinstance(retry, int | float) else None,
                        permanent=code in PERMANENT_CODES)
