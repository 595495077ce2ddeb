"""The one way the agent runs a program: argv list, timeout, env allow-list, exit codes.

No shell is involved (``asyncio.create_subprocess_exec``); the environment is
rebuilt from :data:`ENV_ALLOWED` plus ``LC_ALL=C`` so that tools print the
English, unlocalised output the parsers expect (journalctl's "freed 1.2G",
apt-get's "After this operation").  A program still running after
``timeout_s`` seconds is killed (SIGKILL, its own process group) and reaped.

Errors: :class:`ToolMissing` when the executable is not found (jobs report
the step ``skipped``), :class:`CommandError` for a timeout or an exit status
outside ``ok_codes``.  Both are :class:`agent.errors.AgentError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.errors import AgentError

#: Environment variables passed through from the agent's own environment.
ENV_ALLOWED = ("PATH", "HOME", "TZ", "SYSTEMD_COLORS", "PNPM_HOME", "XDG_DATA_HOME")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: At most this many bytes of stdout/stderr are kept in an error message.
ERROR_TAIL = 400


class CommandError(AgentError):
    """A program failed: exit status not allowed, or timed out (``details.argv``)."""

    code = "internal"


class ToolMissing(CommandError):
    """The program is not installed (not found on PATH)."""


@dataclass(frozen=True)
class Completed:
    """A finished program: ``returncode``, decoded ``stdout``/``stderr``, ``duration_s`` seconds."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float


def which(program: str, path: str | None = None) -> str | None:
    """Absolute path of ``program`` on ``path`` (default: the allowed PATH), or None."""
    return shutil.which(program, path=path or os.environ.get("PATH") or DEFAULT_PATH)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a child gets: allowed variables, ``LC_ALL=C``, then ``extra``."""
    env = {k: v for k in ENV_ALLOWED if (v := os.environ.get(k))}
    env.setdefault("PATH", DEFAULT_PATH)
    env["LC_ALL"] = "C"
    env.update(extra or {})
    return env


async def run(argv: Sequence[str], *, timeout_s: float, ok_codes: Sequence[int] = (0,),
              env: Mapping[str, str] | None = None) -> Completed:
    """Run ``argv`` (``argv[0]`` looked up on PATH) and wait at most ``timeout_s`` seconds.

    Returns :class:`Completed` when the exit status is in ``ok_codes``.
    Raises ToolMissing (not installed) or CommandError (other status, timeout;
    the message holds the tail of stderr).
    """
    exe = argv[0] if os.sep in argv[0] else which(argv[0])
    if exe is None or not os.access(exe, os.X_OK):
        raise ToolMissing(f"{argv[0]} is not installed", {"argv": list(argv)})
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        exe, *argv[1:], stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=child_env(env), start_new_session=True)
    out, err = await _communicate(proc, argv, timeout_s)
    done = Completed(tuple(argv), proc.returncode or 0, out.decode(errors="replace"),
                     err.decode(errors="replace"), round(time.monotonic() - started, 3))
    if done.returncode not in ok_codes:
        tail = (done.stderr.strip() or done.stdout.strip())[-ERROR_TAIL:]
        raise CommandError(f"{' '.join(argv)} exited {done.returncode}: {tail}",
                           {"argv": list(argv), "returncode": done.returncode})
    return done


async def _communicate(proc: asyncio.subprocess.Process, argv: Sequence[str],
                       timeout_s: float) -> tuple[bytes, bytes]:
    try:
        async with asyncio.timeout(timeout_s):
            return await proc.communicate()
    except (TimeoutError, asyncio.CancelledError) as exc:
        _kill_group(proc)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise CommandError(f"{' '.join(argv)} timed out after {timeout_s:g} s",
                           {"argv": list(argv), "timeout_s": timeout_s}) from None


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's process group (it is its own session leader)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
