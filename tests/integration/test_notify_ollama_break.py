"""Breaking the Telegram delivery and the Ollama client the way real life does.

Telegram: the stand-in of test_telegram (127.0.0.1) with a clock stepping
back, an absurd 429 ``retry_after``, a server echoing the URL percent-encoded,
a flood of 500 alerts under a rate limit with a restart half-way, and the
token file missing or readable by everyone.  Ollama: local aiohttp servers
answering 404 pages that are not Ollama's, and an answer of tens of MB.
"""
# The fixtures bot and kit are test_telegram's, imported: their parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from agent.errors import NotFound, UpstreamUnavailable
from agent.notify.outbox import Outbox
from agent.notify.telegram import load_token
from agent.ollama import MAX_ANSWER_BYTES, OllamaClient
from tests.integration.test_telegram import (  # noqa: F401  (bot, kit: fixtures)
    HOST,
    TOKEN,
    BotApi,
    Clock,
    Kit,
    bot,
    dump,
    kit,
)

SECRET = TOKEN.split(":")[1]


def retry_after(seconds: float) -> tuple[int, dict[str, object]]:
    return 429, {"ok": False, "error_code": 429,
                 "description": f"Too Many Requests: retry after {seconds}",
                 "parameters": {"retry_after": seconds}}


# --- Telegram: the clock ------------------------------------------------------------------

async def test_clock_stepping_back_does_not_stall_delivery(bot: BotApi, kit: Kit) -> None:
    notifier = kit.notifier(bot.url)
    bot.script = [retry_after(1)]
    Outbox(kit.store).enqueue("first", kind="alert", at=kit.clock.now)
    await notifier.run_once()
    assert bot.accepted == []
    kit.clock.now -= 86_400  # NTP steps the VM's clock back a day
    await notifier.run_once()
    assert bot.texts() == [f"<b>{HOST}</b>\nfirst"]


async def test_clock_stepped_back_before_a_restart_does_not_stall_delivery(
        bot: BotApi, kit: Kit) -> None:
    bot.script = [retry_after(1)]
    Outbox(kit.store).enqueue("first", kind="alert", at=kit.clock.now)
    await kit.notifier(bot.url).run_once()
    kit.clock.now -= 86_400
    await kit.notifier(bot.url).run_once()  # a new process: only the stored next_at is left
    assert bot.texts() == [f"<b>{HOST}</b>\nfirst"]


async def test_an_absurd_retry_after_is_capped(bot: BotApi, kit: Kit) -> None:
    notifier = kit.notifier(bot.url)
    bot.script = [retry_after(10**9)]  # ~31 years: every later message would wait too
    Outbox(kit.store).enqueue("first", kind="alert", at=kit.clock.now)
    await notifier.run_once()
    [row] = kit.store.query("SELECT next_at FROM outbox")
    assert row["next_at"] == kit.clock.now + 3600
    kit.clock.now += 3600
    await notifier.run_once()
    assert len(bot.accepted) == 1


# --- Telegram: the token ------------------------------------------------------------------

async def test_token_echoed_percent_encoded_is_redacted(
        bot: BotApi, kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    async def echo_quoted(request: web.Request) -> web.Response:
        path = urllib.parse.quote(request.path, safe="/")  # ':' -> '%3A', as a proxy may
        return web.json_response({"ok": False, "error_code": 502,
                                  "description": f"Bad Gateway {path}"}, status=502)
    bot.hook = echo_quoted
    notifier = kit.notifier(bot.url)
    Outbox(kit.store).enqueue("x", kind="alert", at=kit.clock.now)
    with caplog.at_level(logging.DEBUG):
        await notifier.run_once()
    assert "Bad Gateway" in caplog.text
    assert SECRET not in caplog.text + dump(kit.store)


def test_a_configured_token_file_that_is_missing_is_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "telegram-token"
    with caplog.at_level(logging.INFO):
        assert load_token(str(missing), credentials_dir="") is None
    assert str(missing) in caplog.text and "does not exist" in caplog.text


def test_the_token_given_as_token_file_is_never_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):  # the operator put the token where its file goes
        assert load_token(TOKEN, credentials_dir="") is None
    assert SECRET not in caplog.text
    assert "looks like the bot token itself" in caplog.text


def test_a_world_readable_token_file_is_warned_about_never_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "telegram-token"
    path.write_text(TOKEN + "\r\n")  # edited on Windows: CRLF
    os.chmod(path, 0o644)
    with caplog.at_level(logging.DEBUG):
        assert load_token(str(path), credentials_dir="") == TOKEN
    assert "0644" in caplog.text and "chmod 600" in caplog.text and SECRET not in caplog.text
    caplog.clear()
    os.chmod(path, 0o600)
    with caplog.at_level(logging.DEBUG):
        assert load_token(str(path), credentials_dir="") == TOKEN
    assert caplog.text == ""


async def test_a_group_upgraded_to_a_supergroup_names_the_new_chat_id(
        bot: BotApi, kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    bot.script = [(400, {"ok": False, "error_code": 400,
                         "description": "Bad Request: group chat was upgraded to a supergroup "
                                        "chat", "parameters": {"migrate_to_chat_id": -1001234}})]
    Outbox(kit.store).enqueue("x", kind="alert", at=kit.clock.now)
    with caplog.at_level(logging.WARNING):
        await kit.notifier(bot.url).run_once()
    [row] = kit.store.query("SELECT status, last_error FROM outbox")
    assert row["status"] == "dead"  # documented: a 400 other than a parse error parks it
    assert "telegram.chat_id to -1001234" in row["last_error"]
    assert "telegram.chat_id to -1001234" in caplog.text


# --- Telegram: a flood ---------------------------------------------------------------------

class RateLimit:
    """Telegram's group limit, roughly: 20 messages per minute of the (fake) clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[float] = []

    async def __call__(self, request: web.Request) -> web.Response | None:
        window = [t for t in self.sent if self.clock.now - t < 60]
        if len(window) >= 20:
            wait = int(60 - (self.clock.now - window[0])) + 1
            return web.json_response(retry_after(wait)[1], status=429)
        self.sent.append(self.clock.now)
        return None


async def test_a_flood_of_500_alerts_with_a_restart_arrives_once_each(
        bot: BotApi, kit: Kit) -> None:
    first = kit.notifier(bot.url)
    first.baseline()
    for i in range(500):
        kit.emit(f"c{i:03d}", "CRIT")
    bot.hook = RateLimit(kit.clock)
    await first.run_once()
    await first.run_once()
    await first.stop()  # the agent restarts with most of the flood unsent
    second = kit.notifier(bot.url)
    await second.start()
    await second.stop()  # start() only takes the baseline; drive the passes by hand
    for _ in range(2000):
        if second.stats()["pending"] == 0:
            break
        kit.clock.now += 5
        await second.run_once()
    subjects = [t.split("\n")[1].rsplit(" ", 1)[1] for t in bot.texts()]
    assert sorted(subjects) == [f"c{i:03d}" for i in range(500)]  # each once, none lost
    assert second.stats()["dead"] == 0


# --- Ollama --------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[dict[str, Handler]], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler]) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_404_page_that_is_not_ollamas_is_unavailable_not_not_found(
        serve: Callable[[dict[str, Handler]], Awaitable[str]]) -> None:
    async def tags(request: web.Request) -> web.Response:
        return web.json_response({"models": []})
    url = await serve({"/api/tags": tags})  # an Ollama too old for /api/ps: gin's 404 page
    client = OllamaClient(url, 5.0, 5.0)
    with pytest.raises(UpstreamUnavailable) as caught:
        await client.ps()
    assert not isinstance(caught.value, NotFound) and "404" in str(caught.value)

    async def html_404(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html><h1>404 Not Found</h1>nginx</html>",
                            content_type="text/html")
    proxied = OllamaClient(await serve({"/{tail:.*}": html_404}), 5.0, 5.0)
    with pytest.raises(UpstreamUnavailable) as caught:
        await proxied.tags()
    assert not isinstance(caught.value, NotFound)


async def test_ollamas_own_model_not_found_is_still_not_found(
        serve: Callable[[dict[str, Handler]], Awaitable[str]]) -> None:
    async def generate(request: web.Request) -> web.Response:
        return web.json_response({"error": "model 'nope' not found"}, status=404)
    client = OllamaClient(await serve({"/api/generate": generate}), 5.0, 5.0)
    with pytest.raises(NotFound, match="model 'nope' not found"):
        await client.load("nope")


async def test_a_huge_answer_is_refused_without_reading_it_all(
        serve: Callable[[dict[str, Handler]], Awaitable[str]]) -> None:
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"models": [')
        chunk = b'{"name": "m:latest", "size": 1},' * 2048
        try:
            while sent < 4 * MAX_ANSWER_BYTES:
                await resp.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return resp
    client = OllamaClient(await serve({"/api/tags": endless}), 30.0, 30.0)
    with pytest.raises(UpstreamUnavailable, match="larger than"):
        await client.tags()
    assert sent < 3 * MAX_ANSWER_BYTES


async def test_a_large_but_real_tags_list_is_read(
        serve: Callable[[dict[str, Handler]], Awaitable[str]]) -> None:
    models = [{"name": f"team{i}/model{i}:q4_{i}", "model": f"team{i}/model{i}:q4_{i}",
               "modified_at": "2024-05-06T10:11:12.123456789-07:00", "size": i,
               "digest": "ab" * 32, "details": {"format": "gguf", "family": "llama"}}
              for i in range(10_000)]  # ~2.5 MB

    async def tags(request: web.Request) -> web.Response:
        return web.json_response({"models": models})
    client = OllamaClient(await serve({"/api/tags": tags}), 10.0, 10.0)
    assert len(await client.tags()) == 10_000
