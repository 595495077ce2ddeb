"""One outbox message that cannot be prepared is parked; the others still go out."""

from __future__ import annotations

import pytest

from agent.notify import telegram
from agent.notify.outbox import Outbox
from tests.integration.test_notify_ollama_break import api, tk  # noqa: F401  (fixtures)
from tests.integration.test_telegram import HOST, BotApi, Kit


async def test_a_message_that_cannot_be_prepared_does_not_block_the_others(
        api: BotApi, tk: Kit, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    real = telegram.render_parts

    def render(text: str, host: str) -> list[str]:  # a bug hit by one message's text
        if "poison" in text:
            raise ValueError("cannot split this text")
        return real(text, host)

    monkeypatch.setattr(telegram, "render_parts", render)
    notifier = tk.notifier(api.url)
    outbox = Outbox(tk.store)
    outbox.enqueue("poison", kind="alert", at=tk.clock.now)
    outbox.enqueue("second", kind="alert", at=tk.clock.now)
    await notifier.run_once()
    assert api.texts() == [f"<b>{HOST}</b>\nsecond"]
    rows = tk.store.query("SELECT status, last_error FROM outbox ORDER BY id")
    assert [r["status"] for r in rows] == ["dead", "sent"]
    assert "cannot be prepared: ValueError" in rows[0]["last_error"]
