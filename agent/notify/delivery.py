"""The delivery loop: alert events -> rules -> outbox -> Telegram.

Every ``alerts.poll_interval_s`` the loop

1. reads the ``alert_events`` after the stored cursor, applies the rules
   (agent/notify/rules.py) and enqueues each notification in the outbox
   (``dedupe_key`` ``alert:<event id>``, so a crash between the enqueue and
   the cursor update never doubles a message);
2. enqueues level changes whose cooldown has ended (``held:...``);
3. sends the due outbox messages, oldest first, part by part; a message is
   marked sent once Telegram accepted its last part; on a transient failure
   (timeout, connection error, 429, 5xx) it is retried after
   ``retry_min_s * 2**attempts`` (at most ``retry_max_s``), or Telegram's 429
   ``retry_after`` (at most ``max(retry_max_s, 3600)``), and sending pauses
   until then; a pause or ``next_at`` further ahead than that longest delay
   means the clock was stepped back, and is over.  A message Telegram
   refuses for good (400 other than "can't parse entities", 403, 404), or
   one that failed ``telegram.max_attempts`` times or is still unsent
   ``telegram.give_up_after_s`` after it was queued, is parked (outbox
   status ``dead``, logged once at error level) and the next one is sent.

Delivery is at-least-once: a timeout after Telegram accepted a part makes
the part count as unsent, so it may arrive twice.

Quiet start-up: at :meth:`Notifier.start`, unprocessed events older than
``alerts.startup_grace_s`` (all of them on the very first start) only update
the state.  Without ``telegram.chat_id`` or a token, messages stay in the
outbox and the loop says once that delivery is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Callable

import aiohttp

from agent.config import Config, TelegramConfig
from agent.notify.events import SCHEMA as EVENTS_SCHEMA
from agent.notify.outbox import Outbox, OutboxMessage
from agent.notify.rules import AlertStates, StoredEvent, decide, release_held
from agent.notify.telegram import TelegramClient, TelegramError, load_token
from agent.store import Store

log = logging.getLogger(__name__)

BATCH = 500  # events read per query
RETRY_AFTER_CAP_S = 3600.0  # a 429's retry_after is honoured up to this (or retry_max_s)


def backoff_s(attempts: int, low: float, high: float) -> float:
    """Seconds before retry number ``attempts + 1``: ``low * 2**attempts``, at most ``high``."""
    return min(high, low * 2.0 ** min(attempts, 60))


def longest_delay_s(tcfg: TelegramConfig) -> float:
    """The longest retry delay the loop sets, seconds: ``max(retry_max_s,
    RETRY_AFTER_CAP_S)``.  A pause further ahead than this means the clock was
    stepped back, and it is over."""
    return max(tcfg.retry_max_s, RETRY_AFTER_CAP_S)


def retry_delay_s(exc: TelegramError, attempts: int, tcfg: TelegramConfig) -> float:
    """Seconds before the next try after ``attempts`` failed ones: a 429's positive
    ``retry_after``, at most :func:`longest_delay_s`, else the backoff."""
    retry = exc.retry_after_s
    if retry is not None and math.isfinite(retry) and retry > 0:
        return min(retry, longest_delay_s(tcfg))
    return backoff_s(attempts, tcfg.retry_min_s, tcfg.retry_max_s)


class Notifier:
    """Runs the loop above; ``start``/``stop`` from the daemon, :meth:`run_once` from tests.

    ``credentials_dir`` overrides ``$CREDENTIALS_DIRECTORY``; ``session``
    (an ``aiohttp.ClientSession``) is reused by the Telegram client;
    ``clock`` gives Unix seconds.
    """

    def __init__(self, cfg: Config, store: Store, *, outbox: Outbox | None = None,
                 credentials_dir: str | None = None,
                 session: aiohttp.ClientSession | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        store.apply(EVENTS_SCHEMA)
        self.cfg = cfg
        self.store = store
        self.outbox = outbox or Outbox(store)
        self.states = AlertStates(store)
        self.clock = clock
        self.sent = 0  # messages accepted by Telegram since start
        self.failed = 0  # failed send attempts since start
        self.client = self._client(credentials_dir, session)
        self._paused_until = 0.0
        self._task: asyncio.Task[None] | None = None

    def _client(self, credentials_dir: str | None, session: aiohttp.ClientSession | None
                ) -> TelegramClient | None:
        tcfg = self.cfg.telegram
        token = load_token(tcfg.token_file, credentials_dir=credentials_dir)
        if not tcfg.chat_id or token is None:
            missing = "telegram.chat_id" if not tcfg.chat_id else "the bot token"
            log.info("telegram delivery off (%s not configured); messages stay in the outbox",
                     missing)
            return None
        host = self.cfg.alerts.host_name or socket.gethostname()
        return TelegramClient(tcfg, token, host=host, session=session)

    @property
    def enabled(self) -> bool:
        """True when Telegram is configured (chat id and token)."""
        return self.client is not None

    def stats(self) -> dict[str, int]:
        """``{"sent", "failed", "pending", "dead"}``: sends since start, failed attempts,
        queued now, parked (never to be sent) in the outbox."""
        counts = self.outbox.counts()
        return {"sent": self.sent, "failed": self.failed, "pending": counts["pending"],
                "dead": counts["dead"]}

    async def start(self) -> None:
        """Take the quiet start-up baseline, then start the loop task."""
        await asyncio.to_thread(self.baseline)
        self._task = asyncio.create_task(self._run(), name="notify-delivery")

    async def stop(self) -> None:
        """Stop the loop (an unsent message stays in the outbox) and close the client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.client is not None:
            await self.client.close()

    def baseline(self) -> int:
        """Absorb old unprocessed events silently (quiet start-up); returns how many."""
        first = self.states.cursor() is None
        cutoff = math.inf if first else self.clock() - self.cfg.alerts.startup_grace_s
        count = self.process_events(baseline_before=cutoff)
        if first:
            self.states.set_cursor(0)
        return count

    def process_events(self, *, baseline_before: float = -math.inf) -> int:
        """Apply the rules to every event after the cursor; returns how many were read.

        Events with ``at`` before ``baseline_before`` (Unix seconds) update the state only.
        """
        total = 0
        while batch := self._events_after(self.states.cursor() or 0):
            for event in batch:
                self._process(event, baseline=event.at < baseline_before)
            total += len(batch)
        return total

    def _events_after(self, last_id: int) -> list[StoredEvent]:
        rows = self.store.query("SELECT id, at, kind, subject, level, text FROM alert_events"
                                " WHERE id > ? ORDER BY id LIMIT ?", (last_id, BATCH))
        return [StoredEvent(r["id"], r["at"], r["kind"], r["subject"], r["level"], r["text"])
                for r in rows]

    def _process(self, event: StoredEvent, *, baseline: bool) -> None:
        prev = self.states.get(event.kind, event.subject)
        decision = decide(event, prev, self.cfg.alerts, baseline=baseline)
        if decision.text is not None:
            self.outbox.enqueue(decision.text, kind="alert", dedupe_key=f"alert:{event.id}",
                                at=self.clock())
        self.states.commit(event.kind, event.subject, decision.state)

    def release_held(self) -> int:
        """Enqueue the level changes whose cooldown has ended; returns how many."""
        now = self.clock()
        held = self.states.held(now, self.cfg.alerts)
        for kind, subject, state in held:
            text, new_state = release_held(kind, subject, state, now)
            self.outbox.enqueue(text, kind="alert", at=now,
                                dedupe_key=f"held:{kind}:{subject}:{state.last_event_id}")
            self.states.commit(kind, subject, new_state)
        return len(held)

    async def run_once(self) -> None:
        """One pass: new events, ended cooldowns, then the due outbox messages."""
        await asyncio.to_thread(self.process_events)
        await asyncio.to_thread(self.release_held)
        await self.send_due()

    async def send_due(self) -> int:
        """Send due outbox messages oldest first until one fails transiently (a parked
        message does not stop the others); returns how many were sent."""
        now, horizon = self.clock(), longest_delay_s(self.cfg.telegram)
        if self.client is None or 0 < self._paused_until - now <= horizon:
            return 0  # paused; a pause beyond the horizon means the clock went back
        sent = 0
        for msg in await asyncio.to_thread(self.outbox.pending, 20, now=now,
                                           horizon_s=horizon):
            outcome = await self._send(self.client, msg)
            if outcome == "retry":
                break
            sent += outcome == "sent"
        return sent

    async def _send(self, client: TelegramClient, msg: OutboxMessage) -> str:
        """``"sent"``, ``"dead"`` (parked) or ``"retry"`` (transient failure).

        A message that cannot be made into parts (a bug, not Telegram) is parked, so it
        never holds back the messages behind it."""
        try:
            parts = client.parts(msg.text)
        except Exception as exc:
            log.exception("telegram: message %d (%s) cannot be prepared; parked as dead",
                          msg.id, msg.kind)
            await asyncio.to_thread(self.outbox.mark_dead, msg.id,
                                    f"cannot be prepared: {type(exc).__name__}: {exc}")
            return "dead"
        for index in range(msg.parts_sent, len(parts)):
            try:
                await client.send_part(parts[index])
            except TelegramError as exc:
                return await self._failed(msg, exc)
            if index + 1 < len(parts):
                await asyncio.to_thread(self.outbox.mark_part_sent, msg.id, index + 1)
        await asyncio.to_thread(self.outbox.mark_sent, msg.id)
        self.sent += 1
        return "sent"

    def _give_up(self, msg: OutboxMessage, exc: TelegramError) -> str | None:
        """Why ``msg`` is parked after failing with ``exc``, or None to retry it."""
        tcfg = self.cfg.telegram
        if exc.permanent:
            return "Telegram refused it"
        if msg.attempts + 1 >= tcfg.max_attempts:
            return f"{msg.attempts + 1} failed attempts (telegram.max_attempts)"
        if self.clock() - msg.created_at >= tcfg.give_up_after_s:
            return (f"unsent {self.clock() - msg.created_at:.0f} s after it was queued "
                    "(telegram.give_up_after_s)")
        return None

    async def _failed(self, msg: OutboxMessage, exc: TelegramError) -> str:
        self.failed += 1
        why = self._give_up(msg, exc)
        if why is not None:
            log.error("telegram: message %d (%s) parked as dead, never retried: %s; %s",
                      msg.id, msg.kind, why, exc.message)
            await asyncio.to_thread(self.outbox.mark_dead, msg.id, exc.message)
            return "dead"
        delay = retry_delay_s(exc, msg.attempts, self.cfg.telegram)
        retry_at = self.clock() + delay
        self._paused_until = retry_at
        log.warning("telegram: message %d not sent (attempt %d): %s; retry in %.0f s",
                    msg.id, msg.attempts + 1, exc.message, delay)
        await asyncio.to_thread(self.outbox.mark_failed, msg.id, exc.message, retry_at)
        return "retry"

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # keep the loop alive; the outbox keeps the messages
                log.error("notify loop: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.cfg.alerts.poll_interval_s)
