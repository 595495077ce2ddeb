"""Found by a breaking session: the metrics textfile loop on a real agent (real store)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from agent.metrics_export import MetricsExporter
from tests.protocol.conftest import Agent, agent_server  # noqa: F401 (fixture, used by name)

pytestmark = pytest.mark.integration


async def until(check: object, timeout_s: float) -> bool:
    for _ in range(int(timeout_s / 0.05)):
        if callable(check) and check():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_locked_state_store_does_not_end_the_textfile_loop(
        agent_server: Agent, short_tmp: Path) -> None:  # noqa: F811 (the imported fixture)
    """A CLI or sqlite3 shell holding the write lock past the busy timeout (5 s) makes
    one write fail with "database is locked"; the loop says so and goes on."""
    assert agent_server.services.store is not None
    path = short_tmp / "vm-agent.prom"
    holder = sqlite3.connect(agent_server.services.store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    exporter = MetricsExporter(agent_server.services, path=str(path), interval_s=0.1)
    await exporter.start()
    try:
        assert exporter._task is not None
        assert await until(lambda: exporter.last_error is not None, 15)
        assert not exporter._task.done(), exporter._task.exception()
        assert "database is locked" in str(exporter.last_error)
        assert not path.exists()
        holder.execute("ROLLBACK")
        assert await until(lambda: path.exists() and exporter.last_error is None, 15)
        assert b"vmagent_score" in path.read_bytes()
    finally:
        holder.close()
        await exporter.stop()
