"""The cleanup job's host steps: journal_vacuum, apt, pnpm_store, path_retention.

Programs run through :mod:`agent.runner` (argv list, timeout
``cleanup.tool_timeout_s``, ``LC_ALL=C``).  A missing program makes the step
``skipped`` with the reason (raised here as :class:`Skip`).  Dry-run
estimates come from file sizes (allocated bytes) or, for apt's autoremove,
from ``apt-get -s``; see :mod:`agent.jobs.cleanup_files` for the rules.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import threading
import time
from typing import Any

from agent import runner
from agent.config import CleanupConfig
from agent.jobs import cleanup_files as files
from agent.jobs.base import Step, StepResult
from agent.jobs.cleanup_docker import mb


class Skip(Exception):
    """The step does not apply here (tool missing, nothing configured); message = why."""


def _require(program: str) -> None:
    if runner.which(program) is None:
        raise Skip(f"{program} is not installed")


# --- journal_vacuum -------------------------------------------------------------

def _journal_argv(cfg: CleanupConfig) -> list[str]:
    argv = ["journalctl"]
    if cfg.journal_directory:
        argv.append(f"--directory={cfg.journal_directory}")
    if cfg.journal_vacuum_size_bytes:
        argv.append(f"--vacuum-size={cfg.journal_vacuum_size_bytes}")
    if cfg.journal_vacuum_time_s:
        argv.append(f"--vacuum-time={int(cfg.journal_vacuum_time_s)}s")
    return argv


async def plan_journal(cfg: CleanupConfig, name: str, *, now: float) -> Step:
    """What ``journalctl --vacuum-size/--vacuum-time`` would delete, from file names/sizes."""
    _require("journalctl")
    if not cfg.journal_vacuum_size_bytes and not cfg.journal_vacuum_time_s:
        raise Skip("journal_vacuum_size_bytes and journal_vacuum_time_s are both 0")
    chosen = await asyncio.to_thread(_journal_plan, cfg, now)
    size = sum(f.usage for f in chosen)
    return Step(name, name, f"{len(chosen)} archived journal files, {mb(size)} "
                "(estimated from file sizes; journald decides)", size,
                {"argv": tuple(_journal_argv(cfg))})


def _journal_plan(cfg: CleanupConfig, now: float) -> list[files.JournalFile]:
    chosen = []
    for directory in files.journal_dirs(cfg.journal_directory):
        archived, total = files.journal_scan(directory)
        chosen += files.journal_vacuum_plan(archived, total, now=now,
                                            max_use=cfg.journal_vacuum_size_bytes,
                                            retention_s=cfg.journal_vacuum_time_s)
    return chosen


async def run_journal(cfg: CleanupConfig, step: Step) -> StepResult:
    """Run journalctl; freed = the sum of its "freed ..." lines (1024-based units)."""
    done = await runner.run(list(step.args["argv"]), timeout_s=cfg.tool_timeout_s)
    output = done.stdout + done.stderr
    freed = files.parse_freed(output)
    deleted = output.count("Deleted archived journal") + output.count("Deleted empty")
    return StepResult(step.name, "ok", freed, detail=f"journalctl deleted {deleted} archived "
                      f"files, freed {mb(freed)} (sum of its 'freed' lines)")


# --- apt ---------------------------------------------------------------------------

def _apt(cfg: CleanupConfig, *args: str, tool: str = "apt-get") -> list[str]:
    return [tool, "-o", f"Dir::Cache={cfg.apt_cache_dir}", *args]


async def _apt_usage(cfg: CleanupConfig) -> int:
    """Bytes of what ``apt-get clean`` removes, with the paths apt itself resolves."""
    done = await runner.run(_apt(cfg, "shell", "A", "Dir::Cache::archives/d", "P",
                                 "Dir::Cache::pkgcache/f", "S", "Dir::Cache::srcpkgcache/f",
                                 tool="apt-config"), timeout_s=cfg.tool_timeout_s)
    paths = {k: shlex.split(v)[0] if shlex.split(v) else "" for k, _, v in
             (line.partition("=") for line in done.stdout.splitlines())}
    return await asyncio.to_thread(files.apt_cache_usage, paths.get("A") or "/nonexistent",
                                   (paths.get("P", ""), paths.get("S", "")))


async def plan_apt(cfg: CleanupConfig, name: str, *, autoremove: bool) -> Step:
    """``apt-get clean`` (cache file sizes) and, if ``autoremove``, ``apt-get -s autoremove``."""
    _require("apt-get")
    cache = await _apt_usage(cfg)
    removable = 0
    if autoremove:
        sim = await runner.run(_apt(cfg, "-s", "autoremove"), timeout_s=cfg.tool_timeout_s)
        removable = files.parse_apt_freed(sim.stdout)
    what = f"apt-get clean: {mb(cache)} of cached packages"
    if autoremove:
        what += f"; apt-get autoremove: {mb(removable)} (apt's figure)"
    return Step(name, name, what, cache + removable, {"autoremove": autoremove})


async def run_apt(cfg: CleanupConfig, step: Step) -> StepResult:
    """clean (freed = cache bytes before - after), then autoremove (apt's own figure)."""
    before = await _apt_usage(cfg)
    await runner.run(_apt(cfg, "clean"), timeout_s=cfg.tool_timeout_s)
    after = await _apt_usage(cfg)
    freed, detail = max(before - after, 0), f"apt-get clean freed {mb(before - after)}"
    if step.args["autoremove"]:
        done = await runner.run(_apt(cfg, "-y", "autoremove"), timeout_s=cfg.tool_timeout_s,
                                env={"DEBIAN_FRONTEND": "noninteractive"})
        removed = files.parse_apt_freed(done.stdout)
        freed += removed
        detail += f"; apt-get autoremove freed {mb(removed)} (apt's figure)"
    return StepResult(step.name, "ok", freed, detail=detail)


# --- pnpm_store ---------------------------------------------------------------------

async def _pnpm_store(cfg: CleanupConfig) -> tuple[str, int]:
    done = await runner.run(["pnpm", "store", "path"], timeout_s=cfg.tool_timeout_s)
    path = done.stdout.strip().splitlines()[-1]
    return path, await asyncio.to_thread(_du, path)


def _du(path: str) -> int:
    total = 0
    for _dirfd, _name, found in files.old_files(path, ("*",), float("inf")):
        total += found.freed
    return total


async def plan_pnpm(cfg: CleanupConfig, name: str) -> Step:
    """``pnpm store prune``: pnpm has no dry-run, so no estimate (the store's size is shown)."""
    _require("pnpm")
    path, size = await _pnpm_store(cfg)
    return Step(name, name, f"pnpm store prune on {path} ({mb(size)} now; pnpm cannot "
                "estimate what it frees)", None, {"store": path})


async def run_pnpm(cfg: CleanupConfig, step: Step) -> StepResult:
    """Run ``pnpm store prune``; freed = the store's allocated bytes before - after."""
    _path, before = await _pnpm_store(cfg)
    await runner.run(["pnpm", "store", "prune"], timeout_s=cfg.tool_timeout_s)
    _path, after = await _pnpm_store(cfg)
    freed = max(before - after, 0)
    return StepResult(step.name, "ok", freed, detail=f"pnpm store prune freed {mb(freed)}")


# --- path_retention ------------------------------------------------------------------

def _rules(cfg: CleanupConfig, now: float) -> list[dict[str, Any]]:
    return [{"root": r.root, "globs": tuple(r.globs), "days": r.days,
             "cutoff": now - r.days * 86400} for r in cfg.path_retention]


def _scan(rules: list[dict[str, Any]]) -> tuple[int, int, list[str]]:
    """``(files, bytes, unusable roots)``; a file two rules select counts once, as the
    real run deletes it once."""
    seen: set[tuple[int, int]] = set()
    missing = []
    size = 0
    for rule in rules:
        if not _is_dir(rule["root"]):
            missing.append(_why_not(rule["root"]))
            continue
        for _fd, _name, found in files.old_files(rule["root"], rule["globs"], rule["cutoff"]):
            if found.inode not in seen:
                seen.add(found.inode)
                size += found.freed
    return len(seen), size, missing


def _is_dir(path: str) -> bool:
    """A real folder: a symbolic link is not followed, not even as a rule's root."""
    return os.path.isdir(path) and not os.path.islink(path)


def _why_not(root: str) -> str:
    return f"{root} (a symbolic link, not followed)" if os.path.islink(root) else root


async def plan_paths(cfg: CleanupConfig, name: str, *, now: float) -> Step:
    """Files the ``cleanup.path_retention`` rules select (count, allocated bytes)."""
    if not cfg.path_retention:
        raise Skip("no cleanup.path_retention rules configured")
    rules = _rules(cfg, now)
    count, size, missing = await asyncio.to_thread(_scan, rules)
    if len(missing) == len(rules):
        raise Skip(f"no rule root is a folder: {', '.join(missing)}")
    note = f" (missing roots: {', '.join(missing)})" if missing else ""
    return Step(name, name, f"{count} files older than their rule's age, {mb(size)}{note}",
                size, {"rules": tuple(rules)})


async def run_paths(step: Step) -> StepResult:
    """Delete the selected files (re-checked at deletion); freed = their allocated bytes.

    Cancelled (``jobs.step_timeout_s``, a stop), it deletes nothing more: the worker
    thread stops before its next file."""
    deleted: list[files.OldFile] = []
    errors: list[str] = []
    stop = threading.Event()
    try:
        for rule in step.args["rules"]:
            if _is_dir(rule["root"]):
                d, e = await asyncio.to_thread(files.delete_old, rule["root"], rule["globs"],
                                               rule["cutoff"], stop=stop)
                deleted, errors = deleted + d, errors + e
    except asyncio.CancelledError:
        stop.set()  # a step timeout or a stop: the worker thread deletes no further file
        raise
    freed = sum(f.freed for f in deleted)
    return StepResult(step.name, "failed" if errors else "ok", freed,
                      detail=f"deleted {len(deleted)} files, {mb(freed)}",
                      error="; ".join(errors[:20]) or None)


def now() -> float:
    """Unix seconds (a function so the plan's single 'now' is easy to see)."""
    return time.time()
