"""One outbox message that cannot be prepared is parked; the others still go out."""
# The fixtures bot and kit are test_telegram's, imported: their parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import pytest

from agent.notify import telegram
from agent.notify.outbox import Outbox
from tests.integration.test_telegram import HOST, BotApi, Kit, bot, kit  # noqa: F401


async def test_a_message_that_cannot_be_prepared_does_not_block_the_others(
        bot: BotApi, kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    real = telegram.render_parts

    def render(text: str, host: str) -> list[str]:  # a bug hit by one message's text
        if "poison" in text:
            raise ValueError("cannot split this text")
        return real(text, host)

    monkeypatch.setattr(telegram, "render_parts", render)
    notifier = kit.notifier(bot.url)
    outbox = Outbox(kit.store)
    outbox.enqueue("poison", kind="alert", at=kit.clock.now)
    outbox.enqueue("second", kind="alert", at=kit.clock.now)
    await notifier.run_once()
    assert bot.texts() == [f"<b>{HOST}</b>\nsecond"]
    rows = kit.store.query("SELECT status, last_error FROM outbox ORDER BY id")
    assert [r["status"] for r in rows] == ["dead", "sent"]
    assert "cannot be prepared: ValueError" in rows[0]["last_error"]
