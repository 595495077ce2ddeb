"""The cleanup job: frees disk in three modes, each a configured list of steps.

Modes ``standard`` (daily), ``weekly``, ``monthly``: ``cleanup.modes.<mode>``
lists the steps, in order.  Step kinds (``agent.config.CLEANUP_STEPS``):

=======================  ======================================================
docker_build_cache       build cache unused for ``build_cache_age_s``; all of
                         it in the modes of ``build_cache_all_in`` (monthly)
docker_dangling_images   untagged images no container uses
docker_aged_images       tagged images created over ``image_age_days`` ago,
                         used by no container (running *or* stopped), matching
                         no ``keep_images`` pattern or ``keep_labels`` label
journal_vacuum           ``journalctl --vacuum-size/--vacuum-time``
apt                      ``apt-get clean`` (+ ``autoremove`` in
                         ``apt_autoremove_in``, opt-in)
pnpm_store               ``pnpm store prune`` where pnpm is installed
path_retention           ``path_retention`` rules: old files by glob, no
                         symbolic link followed
=======================  ======================================================

Never: volumes, containers, ``docker system prune``.  ``plan()`` reads only
(Docker's ``system df``, file sizes, ``apt-get -s``); a plan that cannot be
made for one step (Docker down) becomes that step's error and the others
still run.  A step whose tool is missing is ``skipped`` with the reason.
Before each deletion the hold is checked again (a hold set mid-run stops
the remaining deletions: those steps are ``skipped``).  Units: bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agent.config import CLEANUP_MODES, CleanupConfig
from agent.containers.engine import DockerEngine
from agent.errors import AgentError
from agent.jobs import cleanup_docker as dk
from agent.jobs import cleanup_steps as host
from agent.jobs.base import JobContext, Step, StepResult


class CleanupJob:
    """See the module docstring.  Registered in :mod:`agent.jobs.catalog`."""

    name = "cleanup"
    modes = CLEANUP_MODES
    default_mode = "standard"
    destructive = True

    async def plan(self, ctx: JobContext, mode: str) -> list[Step]:
        """One Step per configured step of ``mode`` (``estimated_bytes`` in bytes)."""
        cfg: CleanupConfig = ctx.config.cleanup
        now = host.now()
        engine = _engine(ctx)
        try:
            return [await _plan_one(kind, cfg, mode, engine, now)
                    for kind in getattr(cfg.modes, mode)]
        finally:
            engine.close()

    async def execute(self, ctx: JobContext, step: Step, *, dry_run: bool) -> StepResult:
        """``skipped``/``failed`` for a step the plan could not make; ``planned`` with the
        estimate in a dry-run; else the step itself (after a fresh hold check)."""
        if "skip" in step.args:
            return StepResult(step.name, "skipped", detail=step.args["skip"])
        if "error" in step.args:
            return StepResult(step.name, "failed", detail=step.detail, error=step.args["error"])
        if dry_run:
            return StepResult(step.name, "planned", step.estimated_bytes or 0,
                              detail=step.detail)
        ctx.check_hold(f"cleanup step {step.name}")
        engine = _engine(ctx)
        try:
            result = await _run_one(step, ctx.config.cleanup, engine)
        finally:
            engine.close()
        ctx.action("cleanup.step", message=f"cleanup {step.name}: planned {step.detail}; "
                   f"did {result.detail}", step=step.name, freed_bytes=result.freed_bytes)
        return result


def _engine(ctx: JobContext) -> DockerEngine:
    """A client of its own with the cleanup's long timeout (a prune may take minutes)."""
    shared = getattr(ctx.services, "docker", None)
    host_url = shared.host if shared is not None else ctx.config.docker.host
    return DockerEngine(host_url, ctx.config.cleanup.docker_timeout_s)


async def _plan_one(kind: str, cfg: CleanupConfig, mode: str, engine: DockerEngine,
                    now: float) -> Step:
    try:
        return await _PLANNERS[kind](cfg, mode, engine, now)
    except host.Skip as skip:
        return Step(kind, kind, str(skip), 0, {"skip": str(skip)})
    except AgentError as exc:
        return Step(kind, kind, "not planned", None, {"error": f"{exc.code}: {exc.message}"})
    except OSError as exc:
        return Step(kind, kind, "not planned", None, {"error": f"{type(exc).__name__}: {exc}"})


Planner = Callable[[CleanupConfig, str, DockerEngine, float], Awaitable[Step]]
_PLANNERS: dict[str, Planner] = {
    "docker_build_cache": lambda cfg, mode, eng, now: dk.plan_build_cache(
        eng, "docker_build_cache", age_s=cfg.build_cache_age_s,
        prune_all=mode in cfg.build_cache_all_in, now=now),
    "docker_dangling_images": lambda cfg, mode, eng, now: dk.plan_dangling(
        eng, "docker_dangling_images"),
    "docker_aged_images": lambda cfg, mode, eng, now: dk.plan_aged(
        eng, "docker_aged_images", days=cfg.image_age_days, now=now,
        patterns=cfg.keep_images, labels=cfg.keep_labels),
    "journal_vacuum": lambda cfg, mode, eng, now: host.plan_journal(
        cfg, "journal_vacuum", now=now),
    "apt": lambda cfg, mode, eng, now: host.plan_apt(
        cfg, "apt", autoremove=mode in cfg.apt_autoremove_in),
    "pnpm_store": lambda cfg, mode, eng, now: host.plan_pnpm(cfg, "pnpm_store"),
    "path_retention": lambda cfg, mode, eng, now: host.plan_paths(
        cfg, "path_retention", now=now),
}

Runner = Callable[[Step, CleanupConfig, DockerEngine], Awaitable[StepResult]]
_RUNNERS: dict[str, Runner] = {
    "docker_build_cache": lambda step, cfg, eng: dk.run_build_cache(eng, step),
    "docker_dangling_images": lambda step, cfg, eng: dk.run_dangling(eng, step),
    "docker_aged_images": lambda step, cfg, eng: dk.run_aged(eng, step),
    "journal_vacuum": lambda step, cfg, eng: host.run_journal(cfg, step),
    "apt": lambda step, cfg, eng: host.run_apt(cfg, step),
    "pnpm_store": lambda step, cfg, eng: host.run_pnpm(cfg, step),
    "path_retention": lambda step, cfg, eng: host.run_paths(step),
}


async def _run_one(step: Step, cfg: CleanupConfig, engine: DockerEngine) -> StepResult:
    try:
        return await _RUNNERS[step.kind](step, cfg, engine)
    except host.Skip as skip:
        return StepResult(step.name, "skipped", detail=str(skip))


def describe_modes(cfg: CleanupConfig) -> dict[str, Any]:
    """``{mode: [step, ...]}`` as configured (for docs and ``GET /v1/jobs``)."""
    return {mode: list(getattr(cfg.modes, mode)) for mode in CLEANUP_MODES}
