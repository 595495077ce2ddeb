"""The delivery loop against a local stand-in for the Telegram Bot API (127.0.0.1).

The stand-in serves ``POST /bot<token>/sendMessage`` with the documented
shapes (https://core.telegram.org/bots/api#making-requests): ``{"ok": true,
"result": Message}``; 429 with ``parameters.retry_after``; 400 "can't parse
entities" when the HTML is not valid for Telegram (an unescaped ``<`` or
``&``, an unknown tag) and "message is too long" over 4096 UTF-16 units
after entity parsing.  It records every accepted message.
"""

from __future__ import annotations

import asyncio
import html
import io
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.audit import Auditor
from agent.config import AlertsConfig, Config, TelegramConfig
from agent.journal import JournalWriter
from agent.notify.delivery import Notifier
from agent.notify.events import AlertEvent, AlertLevel, AlertLog
from agent.notify.outbox import Outbox
from agent.store import Store

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
CHAT = "4242"
HOST = "vm-test-1"
ALLOWED_TAGS = re.compile(r"</?(?:b|strong|i|em|u|ins|s|strike|del|code|pre)>")
ENTITY = re.compile(r"&(?:amp|lt|gt|quot);")


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class BotApi:
    """The stand-in's state: scripted failures first, then success; what it accepted."""

    url: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    requests: int = 0
    hook: Callable[[web.Request], Awaitable[web.Response | None]] | None = None

    def parse_error(self, body: dict[str, Any]) -> str | None:
        text = str(body.get("text", ""))
        if body.get("parse_mode") == "HTML":
            bare = ALLOWED_TAGS.sub("", text)
            if "<" in bare or ">" in bare or "&" in ENTITY.sub("", bare):
                return "Bad Request: can't parse entities: unsupported start tag"
            text = html.unescape(bare)
        if not text.strip():
            return "Bad Request: message text is empty"
        return "Bad Request: message is too long" if utf16(text) > 4096 else None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        hooked = await self.hook(request) if self.hook is not None else None
        if hooked is not None:
            return hooked
        if request.match_info["token"] != TOKEN:
            return web.json_response({"ok": False, "error_code": 401,
                                      "description": "Unauthorized"}, status=401)
        body = await request.json()
        if self.script:
            status, answer = self.script.pop(0)
            return web.json_response(answer, status=status)
        error = self.parse_error(body)
        if error is not None:
            return web.json_response({"ok": False, "error_code": 400, "description": error},
                                     status=400)
        self.accepted.append(body)
        return web.json_response({"ok": True, "result": {
            "message_id": len(self.accepted), "date": 0, "chat": {"id": int(CHAT)},
            "text": body["text"]}})

    def texts(self) -> list[str]:
        return [str(b["text"]) for b in self.accepted]


TOO_MANY = (429, {"ok": False, "error_code": 429,
                  "description": "Too Many Requests: retry after 1",
                  "parameters": {"retry_after": 1}})
BAD_GATEWAY = (502, {"ok": False, "error_code": 502, "description": "Bad Gateway"})


@pytest.fixture
async def bot() -> AsyncIterator[BotApi]:
    api = BotApi()
    app = web.Application()
    app.router.add_post("/bot{token}/sendMessage", api.handle)
    runner = web.AppRunner(app, access_log=None)  # its log would show the token
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    api.url = f"http://127.0.0.1:{port}"
    yield api
    await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Kit:
    tmp: Path
    store: Store
    alerts: AlertLog
    clock: Clock
    made: list[Notifier] = field(default_factory=list)

    def notifier(self, api_base: str, *, chat_id: str = CHAT, poll_s: float = 5.0,
                 **telegram: Any) -> Notifier:
        creds = self.tmp / "creds"
        creds.mkdir(exist_ok=True)
        (creds / "telegram-token").write_text(TOKEN + "\n")
        tcfg = {"timeout_s": 2.0, "retry_min_s": 10.0, "retry_max_s": 40.0, **telegram}
        cfg = Config(telegram=TelegramConfig(api_base=api_base, chat_id=chat_id, **tcfg),
                     alerts=AlertsConfig(host_name=HOST, poll_interval_s=poll_s))
        self.made.append(Notifier(cfg, self.store, credentials_dir=str(creds), clock=self.clock))
        return self.made[-1]

    def emit(self, subject: str, level: AlertLevel = "WARN", text: str = "",
             kind: str = "io.write_rate") -> None:
        self.alerts.emit(AlertEvent(kind, subject, level, text or f"{subject} {level}"),
                         at=self.clock.now)


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    store = Store(tmp_path / "state")
    auditor = Auditor(JournalWriter(socket_path=str(tmp_path / "no.sock"), stream=io.StringIO()))
    made = Kit(tmp_path, store, AlertLog(store, auditor), Clock())
    yield made
    for notifier in made.made:  # also when a test failed half-way
        await notifier.stop()
    store.close()


async def test_alert_goes_out_escaped_with_host_and_emoji(bot: BotApi, kit: Kit) -> None:
    notifier = kit.notifier(bot.url)
    notifier.baseline()
    kit.emit("<web&api>", "CRIT", "<web&api> writes 50 GB/day \U0001F4BE")
    await notifier.run_once()
    [body] = bot.accepted
    assert (body["chat_id"], body["parse_mode"]) == (CHAT, "HTML")
    assert body["text"] == (f"<b>{HOST}</b>\n\U0001F534 CRIT: io.write_rate &lt;web&amp;api&gt;"
                            "\n&lt;web&amp;api&gt; writes 50 GB/day \U0001F4BE")
    assert notifier.stats() == {"sent": 1, "failed": 0, "pending": 0, "dead": 0}
    await notifier.stop()


async def test_long_message_is_split_under_the_limit(bot: BotApi, kit: Kit) -> None:
    lines = [f"{i:04d} <c{i}> \U0001F534 & unhealthy" for i in range(600)]
    Outbox(kit.store).enqueue("\n".join(lines), kind="digest", at=kit.clock.now)
    notifier = kit.notifier(bot.url)
    await notifier.run_once()
    assert len(bot.accepted) > 1
    got = []
    for text in bot.texts():
        assert utf16(text) <= 4096 and text.startswith(f"<b>{HOST}</b>\n")
        got += html.unescape(text.removeprefix(f"<b>{HOST}</b>\n")).split("\n")
    assert got == lines
    await notifier.stop()


async def test_outage_then_recovery_loses_and_doubles_nothing(bot: BotApi, kit: Kit) -> None:
    notifier = kit.notifier(bot.url)
    notifier.baseline()
    bot.script = [BAD_GATEWAY]
    for name in ("a", "b", "c"):
        kit.emit(name)
    await notifier.run_once()
    assert bot.accepted == [] and notifier.stats()["failed"] == 1
    await notifier.run_once()  # paused: no request while backing off
    assert bot.requests == 1
    kit.clock.now += 10
    await notifier.run_once()
    await notifier.run_once()
    assert [t.split("\n")[1] for t in bot.texts()] == [
        "\U0001F7E0 WARN: io.write_rate a", "\U0001F7E0 WARN: io.write_rate b",
        "\U0001F7E0 WARN: io.write_rate c"]
    assert notifier.stats() == {"sent": 3, "failed": 1, "pending": 0, "dead": 0}
    await notifier.stop()


async def test_network_down_backs_off_and_never_leaks_the_token(
        bot: BotApi, kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    notifier = kit.notifier(dead)
    notifier.baseline()
    kit.emit("web")
    with caplog.at_level(logging.DEBUG):
        for step in (0, 10, 20, 40, 40):  # capped exponential backoff
            kit.clock.now += step
            await notifier.run_once()
    await notifier.stop()
    [row] = kit.store.query("SELECT attempts, last_error, next_at FROM outbox")
    assert row["attempts"] == 5 and row["next_at"] == kit.clock.now + 40
    assert "ClientConnectorError" in row["last_error"]
    assert TOKEN not in caplog.text and TOKEN.split(":")[1] not in caplog.text
    assert TOKEN.split(":")[1] not in dump(kit.store)
    later = kit.notifier(bot.url)  # the network is back, after a restart
    kit.clock.now += 40
    await later.run_once()
    assert len(bot.accepted) == 1
    await later.stop()


async def test_429_retry_after_is_honoured(bot: BotApi, kit: Kit) -> None:
    notifier = kit.notifier(bot.url)
    notifier.baseline()
    bot.script = [TOO_MANY]
    kit.emit("web")
    await notifier.run_once()
    [row] = kit.store.query("SELECT next_at, last_error FROM outbox")
    assert row["next_at"] == kit.clock.now + 1 and "429" in row["last_error"]
    kit.clock.now += 0.5
    await notifier.run_once()
    assert bot.requests == 1
    kit.clock.now += 0.5
    await notifier.run_once()
    assert len(bot.accepted) == 1
    await notifier.stop()


async def test_rejected_markup_is_resent_as_plain_text(bot: BotApi, kit: Kit) -> None:
    notifier = kit.notifier(bot.url)
    bot.script = [(400, {"ok": False, "error_code": 400,
                         "description": "Bad Request: can't parse entities: x"})]
    Outbox(kit.store).enqueue("a <b> & c", kind="alert", at=kit.clock.now)
    await notifier.run_once()
    [body] = bot.accepted
    assert "parse_mode" not in body and body["text"] == f"{HOST}\na <b> & c"
    await notifier.stop()


async def test_a_failed_part_resumes_without_resending_earlier_parts(bot: BotApi,
                                                                     kit: Kit) -> None:
    lines = [f"line {i:05d} " + "x" * 80 for i in range(120)]  # about 3 parts
    Outbox(kit.store).enqueue("\n".join(lines), kind="digest", at=kit.clock.now)
    notifier = kit.notifier(bot.url)
    parts = notifier.client.parts("\n".join(lines)) if notifier.client else []
    assert len(parts) == 3

    async def fail_second(request: web.Request) -> web.Response | None:
        if bot.requests != 2:
            return None
        return web.json_response(BAD_GATEWAY[1], status=502)
    bot.hook = fail_second
    await notifier.run_once()
    bot.hook = None
    assert len(bot.accepted) == 1 and bot.requests == 2
    kit.clock.now += 10
    await notifier.run_once()
    assert bot.texts() == parts  # each part exactly once, in order
    await notifier.stop()


async def test_restart_with_unsent_alerts_sends_them_once(bot: BotApi, kit: Kit) -> None:
    off = kit.notifier(bot.url, chat_id="")  # delivery off: everything waits in the outbox
    assert not off.enabled
    off.baseline()
    kit.emit("web")
    kit.emit("db", kind="container.oom")
    await off.run_once()
    await off.stop()
    assert off.stats()["pending"] == 2 and bot.requests == 0
    on = kit.notifier(bot.url, poll_s=0.05)
    await on.start()  # the daemon's path: baseline, then the background task
    for _ in range(100):
        if len(bot.accepted) == 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # several more passes: nothing doubled
    await on.stop()
    assert len(bot.accepted) == 2 and on.stats()["pending"] == 0


async def test_bad_token_error_never_reaches_logs_or_rows(
        bot: BotApi, kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    async def echo_url(request: web.Request) -> web.Response:  # a server that echoes the URL
        return web.json_response({"ok": False, "error_code": 401,
                                  "description": f"Unauthorized {request.path}"}, status=401)
    bot.hook = echo_url
    notifier = kit.notifier(bot.url)
    notifier.baseline()
    kit.emit("web")
    with caplog.at_level(logging.DEBUG):
        await notifier.run_once()
    await notifier.stop()
    assert "Unauthorized /bot<token>/sendMessage" in caplog.text
    assert TOKEN.split(":")[1] not in caplog.text + dump(kit.store)


def refusal(code: int, description: str) -> tuple[int, dict[str, Any]]:
    return code, {"ok": False, "error_code": code, "description": description}


def outbox_rows(store: Store) -> list[tuple[str, str, int, str | None]]:
    return [(r["text"], r["status"], r["attempts"], r["last_error"]) for r in store.query(
        "SELECT text, status, attempts, last_error FROM outbox ORDER BY id")]


async def test_a_refused_message_is_parked_and_the_next_ones_go_out(
        bot: BotApi, kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(kit.store)
    for text in ("empty", "blocked", "gone", "fine"):
        outbox.enqueue(text, kind="alert", at=kit.clock.now)
    bot.script = [refusal(400, "Bad Request: message text is empty"),
                  refusal(403, "Forbidden: bot was blocked by the user"),
                  refusal(404, "Not Found")]
    notifier = kit.notifier(bot.url)
    with caplog.at_level(logging.WARNING):
        await notifier.run_once()
        await notifier.run_once()  # a parked message is never retried
    assert bot.texts() == [f"<b>{HOST}</b>\nfine"] and bot.requests == 4
    assert outbox_rows(kit.store) == [
        ("empty", "dead", 1, "telegram error 400: Bad Request: message text is empty"),
        ("blocked", "dead", 1, "telegram error 403: Forbidden: bot was blocked by the user"),
        ("gone", "dead", 1, "telegram error 404: Not Found"),
        ("fine", "sent", 1, None)]
    parked = [r for r in caplog.records if "parked" in r.getMessage()]
    assert len(parked) == 3 and {r.levelno for r in parked} == {logging.ERROR}
    assert "message text is empty" in parked[0].getMessage()
    assert notifier.stats() == {"sent": 1, "failed": 3, "pending": 0, "dead": 3}
    assert [m.text for m in outbox.dead()] == ["gone", "blocked", "empty"]


async def test_a_message_failing_transiently_is_parked_after_max_attempts(
        bot: BotApi, kit: Kit) -> None:
    outbox = Outbox(kit.store)
    outbox.enqueue("stuck", kind="alert", at=kit.clock.now)
    outbox.enqueue("behind", kind="alert", at=kit.clock.now)
    bot.script = [BAD_GATEWAY] * 3
    notifier = kit.notifier(bot.url, max_attempts=3)
    for _ in range(3):
        await notifier.run_once()
        kit.clock.now += 40
    assert bot.texts() == [f"<b>{HOST}</b>\nbehind"] and bot.requests == 4
    assert outbox_rows(kit.store)[0] == ("stuck", "dead", 3,
                                         "telegram error 502: Bad Gateway")


async def test_a_message_failing_past_give_up_after_s_is_parked(bot: BotApi, kit: Kit) -> None:
    outbox = Outbox(kit.store)
    outbox.enqueue("old", kind="alert", at=kit.clock.now)
    outbox.enqueue("new", kind="alert", at=kit.clock.now + 3600)
    kit.clock.now += 3600
    bot.script = [TOO_MANY]
    notifier = kit.notifier(bot.url, give_up_after_s=3600.0)
    await notifier.run_once()
    assert outbox_rows(kit.store)[0][:3] == ("old", "dead", 1)
    assert bot.texts() == [f"<b>{HOST}</b>\nnew"]


async def test_a_timeout_stores_a_clear_error(bot: BotApi, kit: Kit) -> None:
    async def silent(request: web.Request) -> web.Response | None:
        await asyncio.sleep(1.5)
        return None
    bot.hook = silent
    Outbox(kit.store).enqueue("slow", kind="alert", at=kit.clock.now)
    notifier = kit.notifier(bot.url, timeout_s=1.0)
    await notifier.run_once()
    [row] = outbox_rows(kit.store)
    assert row == ("slow", "pending", 1, "no answer from Telegram within 1 s")


def dump(store: Store) -> str:
    """Every row of every table, as text."""
    names = [r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")]
    return "\n".join(repr(tuple(row)) for n in names for row in store.query(f"SELECT * FROM {n}"))


