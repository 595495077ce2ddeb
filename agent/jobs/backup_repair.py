"""``backup-repair``: keep each configured git work tree in line with its remote branch.

One step per repo of ``backup_repair.repos`` (``path``, ``remote``,
``branch``, ``push``).  :meth:`BackupRepairJob.plan` only reads
(:func:`agent.gitrepo.inspect`); :meth:`BackupRepairJob.execute` acts:

1. a rebase left half done (an earlier crash) is aborted first, after a
   safety ref at its detached HEAD when that commit is not on the branch
   (commits made while it was stopped); one with tracked files changed (a
   conflict being resolved by hand) is broken instead: aborting would
   discard them;
2. broken (not a repo, no such remote, detached HEAD, another branch, a
   merge in progress, a leftover ``index.lock`` or ref lock, a dirty work
   tree): nothing is done, the step fails, alert ``backup.failed``;
3. fetch ``+refs/heads/B:refs/remotes/R/B``; a fetch that fails changes
   nothing: ``upstream_unavailable``, also when it times out
   (``git_timeout_s``: a hung remote); no such branch on the remote: broken;
4. when the state (5.) calls for a fast-forward, reset or rebase: untracked or
   ignored files the remote tree would overwrite
   (:func:`agent.gitrepo.untracked_in_way`) make
   the repo broken, nothing is touched (a safety ref keeps commits, not files);
5. classify with ``git rev-list --left-right --count`` and act:
   ``up_to_date`` nothing; ``behind`` ``git merge --ff-only``; ``ahead``
   ``git push`` (no force) when the repo's ``push`` is true, else reported;
   ``diverged``: when every local commit is on the remote by patch
   (``git cherry``: e.g. after a force-push) ``git reset --hard`` to the
   remote branch, else ``git rebase`` onto it (then pushed like ``ahead``);
   a conflicting rebase is aborted (``git rebase --abort``: the repo is left
   as it was) and alerted ``backup.conflict`` (another rebase failure, or one
   killed at ``git_timeout_s``, is aborted too and gives its reason); a
   failed push keeps git's reason lines (:func:`agent.gitrepo.reason`), a
   push that times out is ``upstream_unavailable``.

The git actions themselves (fetch, changes after a hold check, safety refs,
push, the step's detail and alerts) are :class:`Repair`, in
:mod:`agent.jobs.backup_repair_steps`; this module decides which a state calls
for.

Before any rebase or reset, a safety ref ``refs/vm-agent/backup/<UTC time>``
keeps the old tip reachable (none is added when one already points at it).
The job is ``destructive``: the runner refuses a real run with 423 during a
maintenance hold, and the hold is checked again before every change.  A
dry-run changes nothing, not even remote-tracking refs: it asks the remote
with ``git ls-remote`` instead of fetching, and it emits no alerts (it only
reports).

Each step's detail: ``<state>; before <commit> after <commit>; actions: ...``
(the configured branch's commit before and after); each action is audited.
A repo that is fine again after a failure gets an ``OK`` event of the same
kind (the notifier announces the recovery).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from agent import gitrepo
from agent.config import BackupRepo
from agent.errors import AgentError, Locked
from agent.gitrepo import Git, divergence, inspect, missing_by_patch, short
from agent.jobs.backup_repair_steps import ALERT_KINDS, SAFETY_PREFIX, Repair
from agent.jobs.base import JobContext, NothingToDo, Step, StepResult
from agent.runner import CommandError

__all__ = ["ALERT_KINDS", "SAFETY_PREFIX", "STATES", "BackupRepairJob", "Repair", "repair"]

STATES = ("up_to_date", "behind", "ahead", "diverged", "broken", "upstream_unavailable")


class BackupRepairJob:
    """See the module docstring.  Registered in :mod:`agent.jobs.catalog`."""

    name = "backup-repair"
    modes = ("standard",)
    default_mode = "standard"
    destructive = True

    async def plan(self, ctx: JobContext, mode: str) -> list[Step]:
        """One ``repo`` step per configured repo, its detail the local state (read-only).

        Raises NothingToDo (an ``ok`` run that says so) when no repo is configured.
        """
        if not ctx.config.backup_repair.repos:
            raise NothingToDo("no repos configured (backup_repair.repos): nothing to repair")
        timeout = ctx.config.backup_repair.git_timeout_s
        return [await _plan_one(repo, timeout) for repo in ctx.config.backup_repair.repos]

    async def execute(self, ctx: JobContext, step: Step, *, dry_run: bool) -> StepResult:
        """Repair one repo (or, with ``dry_run``, say what would be done: ``planned``)."""
        repo = BackupRepo(**step.args)
        git = Git(repo.path, ctx.config.backup_repair.git_timeout_s)
        fix = Repair(ctx, git, repo, step.name, dry_run=dry_run)
        try:
            return await repair(fix)
        except Locked:
            raise
        except AgentError as exc:
            return await fix.fail("broken", f"{exc.code}: {exc.message}")


async def _plan_one(repo: BackupRepo, timeout_s: float) -> Step:
    args = {"path": repo.path, "remote": repo.remote, "branch": repo.branch, "push": repo.push}
    try:
        found = await inspect(Git(repo.path, timeout_s), remote=repo.remote, branch=repo.branch)
        local = (f"broken: {found.broken}" if found.broken else
                 "leftover rebase" if found.rebasing else "clean")
    except AgentError as exc:
        local = f"not inspected: {exc.message}"
    return Step(f"repo:{repo.path}", "repo", f"{repo.path} ({repo.remote}/{repo.branch}, "
                f"push {'on' if repo.push else 'off'}): {local}", None, args)


async def repair(r: Repair) -> StepResult:
    """Repair one repo (the module docstring's order); the step's result."""
    found = await inspect(r.git, remote=r.repo.remote, branch=r.repo.branch)
    r.before = await r.tip() if found.repo else None
    if found.rebasing and not found.broken:
        if r.dry_run:
            return await r.done("would abort the leftover rebase, then repair")
        await r.keep_detached_head()
        await r.change("rebase --abort (leftover)", "rebase", "--abort")
        found = await inspect(r.git, remote=r.repo.remote, branch=r.repo.branch)
    if found.broken:
        return await r.fail("broken", found.broken)
    upstream = await r.remote_commit()
    if isinstance(upstream, StepResult):
        return upstream
    ahead, behind = await divergence(r.git, upstream)
    r.state = _classify(ahead, behind)
    if r.state in ("behind", "diverged") and (blocked := await r.blockers(upstream)):
        return blocked
    return await _HANDLERS[r.state](r, upstream, ahead, behind)


def _classify(ahead: int, behind: int) -> str:
    if ahead and behind:
        return "diverged"
    return "ahead" if ahead else "behind" if behind else "up_to_date"


async def _up_to_date(r: Repair, upstream: str, ahead: int, behind: int) -> StepResult:
    return await r.done("")


async def _behind(r: Repair, upstream: str, ahead: int, behind: int) -> StepResult:
    if r.dry_run:
        return await r.done(f"would fast-forward {behind} commits")
    await r.change("merge --ff-only", "merge", "--ff-only", "--quiet", upstream)
    return await r.done(f"fast-forwarded {behind} commits")


async def _ahead(r: Repair, upstream: str, ahead: int, behind: int) -> StepResult:
    return await r.push(ahead)


async def _diverged(r: Repair, upstream: str, ahead: int, behind: int) -> StepResult:
    missing = await missing_by_patch(r.git, upstream)
    if not missing:
        if r.dry_run:
            return await r.done(f"would reset --hard to the remote: all {ahead} local commits "
                                "are on it by patch")
        r.ctx.check_hold(f"backup-repair reset --hard in {r.repo.path}")
        await r.safety_ref()
        await r.change("reset --hard", "reset", "--hard", "--quiet", upstream)
        return await r.done(f"reset to the remote: all {ahead} local commits are on it by patch")
    if r.dry_run:
        return await r.done(f"would rebase {len(missing)} local commits onto the remote")
    return await _rebase(r, upstream, missing)


async def _rebase(r: Repair, upstream: str, missing: list[str]) -> StepResult:
    r.ctx.check_hold(f"backup-repair rebase in {r.repo.path}")
    await r.safety_ref()
    env = await _identity(r.git)
    try:
        done = await r.git.try_run("rebase", "--no-autostash", upstream, env=env)
    except CommandError as exc:  # killed at git_timeout_s: abort now, not on the next run
        if "timeout_s" not in exc.details:
            raise
        return await _rebase_failed(r, missing, f"rebase timed out after "
                                    f"{exc.details['timeout_s']:g} s", conflict=False)
    if done.returncode == 0:
        r.actions.append("rebase")
        ahead, _ = await divergence(r.git, upstream)
        return await r.push(ahead)
    conflict = "CONFLICT" in done.stdout + done.stderr
    why = "rebase conflict" if conflict else f"rebase failed ({gitrepo.reason(done.stderr, 300)})"
    return await _rebase_failed(r, missing, why, conflict=conflict)


async def _rebase_failed(r: Repair, missing: list[str], why: str, *,
                         conflict: bool) -> StepResult:
    """``rebase --abort``, then fail: ``backup.conflict`` on a conflict, else ``backup.failed``."""
    if (await r.git.try_run("rebase", "--abort")).returncode == 0:
        r.actions.append(f"rebase ({'conflict' if conflict else 'failed'}), rebase --abort")
    found = await inspect(r.git, remote=r.repo.remote, branch=r.repo.branch)
    left = ("left as it was" if await r.tip() == r.before and not found.rebasing
            else "NOT as it was")
    lost = ", ".join(short(c) for c in missing)
    return await r.fail("diverged", f"{why}, aborted (repo {left}); no reset: "
                        f"{len(missing)} local commits are not on the remote ({lost})",
                        kind="backup.conflict" if conflict else "backup.failed", level="CRIT")


async def _identity(git: Git) -> dict[str, str]:
    """A committer for the rebase when git has none configured (``vm-agent``)."""
    if (await git.try_run("config", "user.email")).returncode == 0:
        return {}
    return {"GIT_COMMITTER_NAME": "vm-agent",
            "GIT_COMMITTER_EMAIL": f"vm-agent@{socket.gethostname()}"}


Handler = Callable[[Repair, str, int, int], Awaitable[StepResult]]
_HANDLERS: dict[str, Handler] = {"up_to_date": _up_to_date, "behind": _behind, "ahead": _ahead,
                             "diverged": _diverged}
