"""agent.runner: argv lists, allowed exit codes, timeouts, missing tools, a clean environment."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.runner import CommandError, ToolMissing, run


async def test_output_and_clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMAGENT_SECRET_TOKEN", "s3cret")
    done = await run(["sh", "-c", "echo out; echo err >&2; env"], timeout_s=5)
    assert done.returncode == 0 and done.stdout.startswith("out\n") and done.stderr == "err\n"
    assert "LC_ALL=C" in done.stdout and "s3cret" not in done.stdout


async def test_exit_codes() -> None:
    assert (await run(["sh", "-c", "exit 3"], timeout_s=5, ok_codes=(0, 3))).returncode == 3
    with pytest.raises(CommandError) as err:
        await run(["sh", "-c", "echo broken >&2; exit 3"], timeout_s=5)
    assert err.value.details["returncode"] == 3 and "broken" in err.value.message


async def test_missing_tool() -> None:
    with pytest.raises(ToolMissing):
        await run(["vmagent-no-such-tool"], timeout_s=5)


async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandError, match="timed out"):
        await run(["sh", "-c", f"sleep 30 & echo $! >{pidfile}; wait"], timeout_s=0.5)
    assert time.monotonic() - started < 5
    child = int(pidfile.read_text())
    for _ in range(100):  # SIGKILLed with its group; gone once init reaps it
        if not _alive(child):
            break
        await asyncio.sleep(0.02)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
